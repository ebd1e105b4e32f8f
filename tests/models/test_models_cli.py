"""show_models: the function behind `sonic models APP [--json] [--plot PNG]`."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from models.cli import show_models
from profiler import ProfileStore
from profiler.synthetic import CHAIN, chain_behaviour, simulate_profile
from sonic.errors import NotFittedError

SPEC = "profiler.synthetic:CHAIN"


@pytest.fixture()
def root(tmp_path: Path, chain_profile: pd.DataFrame) -> Path:
    ProfileStore(tmp_path).append("chain", chain_profile)
    return tmp_path


def test_json_rows(root: Path) -> None:
    out: list[str] = []
    rows = show_models(SPEC, root, as_json=True, echo=out.append)
    assert json.loads(out[0]) == rows
    assert {r["metric"] for r in rows} == {"memory", "time", "output_bytes", "fanout"}
    for r in rows:
        assert isinstance(r["n_samples"], int) and r["n_samples"] > 0
        assert r["mape"] is None or 0 <= r["mape"] < 1
    assert (root / "models" / "chain" / "manifest.json").exists()  # fitted from the profile


def test_table_and_plot(root: Path) -> None:
    out: list[str] = []
    png = root / "fits.png"
    show_models(SPEC, root, plot_path=png, echo=out.append)
    assert out[0].split()[:5] == ["stage", "metric", "model", "samples", "mape"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_models_show_the_saved_models_not_a_refit_of_newer_rows(root: Path) -> None:
    """New rows wait for a refit that wins the champion/challenger test (models.refit);
    showing the models must not replace them behind its back."""
    first = show_models(SPEC, root, as_json=True, echo=lambda s: None)
    more = simulate_profile(CHAIN, chain_behaviour(), [64_000_000], 2, seed=9)
    ProfileStore(root).append("chain", more)
    second = show_models(SPEC, root, as_json=True, echo=lambda s: None)
    assert second[0]["n_samples"] == first[0]["n_samples"]


def test_no_profile_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(NotFittedError, match="sonic profile profiler.synthetic:CHAIN"):
        show_models(SPEC, tmp_path, echo=lambda s: None)
