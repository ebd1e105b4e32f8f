"""Simulated profiles with known ground truth (no stage runs: fast and exact)."""

from __future__ import annotations

import pandas as pd
import pytest

from profiler.synthetic import CHAIN, chain_behaviour, simulate_profile

MB = 1_000_000
SIZES = [2 * MB, 4 * MB, 8 * MB, 16 * MB, 32 * MB]


@pytest.fixture(scope="session")
def chain_profile() -> pd.DataFrame:
    return simulate_profile(CHAIN, chain_behaviour(), SIZES, 3, noise=0.1)
