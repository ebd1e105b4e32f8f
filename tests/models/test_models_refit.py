"""Online refit after a run: append the measurements, refit, save."""

from __future__ import annotations

from pathlib import Path

import pytest

from models import AppModel, refit
from profiler import ProfileStore, profile_app
from profiler.synthetic import CHAIN, FEATURED, chain_behaviour, simulate_run
from sonic.errors import UserInputError
from sonic.reference import ReferenceExecutor


def test_refit_appends_and_refits(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path)
    profile_app(CHAIN, [64_000, 128_000, 256_000], 1, store=store)
    executor = ReferenceExecutor(CHAIN)
    try:
        (tmp_path / "input").write_bytes(b"x" * 200_000)
        result = executor.run(tmp_path / "input")
    finally:
        executor.cleanup()
    model = refit(CHAIN, result, tmp_path)
    assert len(store.parts("chain")) == 4
    assert model.training_["runs"] == 4 and 200_000.0 in model.training_["sizes"]
    assert AppModel.load("chain", tmp_path).training_["runs"] == 4


def test_refit_rejects_a_run_of_another_app(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="not 'featured'"):
        refit(FEATURED, simulate_run(CHAIN, chain_behaviour(), 100_000), tmp_path)
