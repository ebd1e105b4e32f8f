"""Online refit after a run: append the measurements, refit, save."""

from __future__ import annotations

from pathlib import Path

import pytest

from models import AppModel, refit
from profiler import ProfileStore, profile_app
from profiler.synthetic import CHAIN, FEATURED, chain_behaviour, simulate_run
from sonic.errors import NotFittedError, UserInputError
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


# ---------------------------------------------------------------------------- learn (champion/challenger)
import dataclasses  # noqa: E402
import multiprocessing  # noqa: E402
import random  # noqa: E402

from models import learn  # noqa: E402
from profiler.synthetic import simulate_profile  # noqa: E402

SIZES = [2_000_000, 4_000_000, 8_000_000, 16_000_000, 32_000_000]


def _profiled(root: Path) -> AppModel:
    store = ProfileStore(root)
    store.append("chain", simulate_profile(CHAIN, chain_behaviour(), SIZES, 3, noise=0.02, seed=1))
    model = AppModel("chain").fit(store.load("chain"))
    model.save(root)
    return model


def test_learn_never_records_a_run_whose_output_failed(tmp_path: Path) -> None:
    _profiled(tmp_path)
    bad = simulate_run(CHAIN, chain_behaviour(), 8_000_000)
    bad.output_ok = False
    outcome = learn(CHAIN, bad, tmp_path)
    assert not outcome.recorded and "failed validation" in outcome.line
    assert len(ProfileStore(tmp_path).parts("chain")) == 1


def test_learn_keeps_the_champion_when_new_runs_are_mismeasured(tmp_path: Path) -> None:
    """Cluster rows that disagree wildly with the profile (what a different memory semantics
    did) must not replace good models: plans would get worse."""
    assert all(sm.trusted for sm in _profiled(tmp_path).stages_.values())
    poisoned = {name: dataclasses.replace(b, memory=lambda x, a, f, m=b.memory: 3 * m(x, a, f) + 90 * random.random())
                for name, b in chain_behaviour().items()}
    outcomes = [learn(CHAIN, simulate_run(CHAIN, poisoned, size), tmp_path) for size in (6_000_000, 24_000_000,
                                                                                         12_000_000)]
    assert all(o.recorded for o in outcomes)
    rejected = [o for o in outcomes if not o.replaced]
    assert rejected and all("kept the current models" in o.line for o in rejected), [o.line for o in outcomes]
    assert any("would no longer trust" in o.reason for o in rejected)
    kept = AppModel.load("chain", tmp_path)
    assert all(sm.trusted for sm in kept.stages_.values())  # plans never got worse
    assert len(ProfileStore(tmp_path).parts("chain")) == 4  # the rows are kept for later challenges


def test_learn_replaces_the_models_with_a_refit_that_predicts_as_well(tmp_path: Path) -> None:
    champion = _profiled(tmp_path)
    outcome = learn(CHAIN, simulate_run(CHAIN, chain_behaviour(), 12_000_000), tmp_path)
    assert outcome.replaced, outcome.line
    assert outcome.line.startswith("models: refitted")
    assert AppModel.load("chain", tmp_path).training_["runs"] == champion.training_["runs"] + 1


def test_learn_names_the_first_models(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path)
    store.append("chain", simulate_profile(CHAIN, chain_behaviour(), SIZES[:3], 1))
    outcome = learn(CHAIN, simulate_run(CHAIN, chain_behaviour(), 5_000_000), tmp_path)
    assert outcome.replaced and "first models" in outcome.reason


def _learn_in_child(root: str, size: int) -> str:
    return learn(CHAIN, simulate_run(CHAIN, chain_behaviour(), size), Path(root)).line


def test_concurrent_learners_all_succeed(tmp_path: Path) -> None:
    _profiled(tmp_path)
    with multiprocessing.get_context("fork").Pool(8) as pool:
        lines = pool.starmap(_learn_in_child, [(str(tmp_path), 3_000_000 + i * 1_000_000) for i in range(8)])
    assert len(lines) == 8 and all(line.startswith("models:") for line in lines)
    assert len(ProfileStore(tmp_path).parts("chain")) == 9
    AppModel.load("chain", tmp_path)  # still loadable
    assert not list((tmp_path / "models" / "chain").glob(".*.tmp"))


def test_rows_of_an_older_measurement_semantics_are_not_fitted(tmp_path: Path) -> None:
    frame = simulate_profile(CHAIN, chain_behaviour(), SIZES[:3], 1)
    old = frame.drop(columns=["semantics", "own_memory_mb", "baseline_memory_mb", "cpu_wait_s"])
    folder = ProfileStore(tmp_path).app_dir("chain")
    folder.mkdir(parents=True)
    old.to_parquet(folder / "part-old.parquet", index=False)
    rows = ProfileStore(tmp_path).load("chain")
    assert (rows["semantics"] == 1).all()
    with pytest.raises(NotFittedError, match="older definition"):
        AppModel("chain").fit(rows)


def test_untrusted_reason_names_the_sample_count(tmp_path: Path) -> None:
    model = AppModel("chain").fit(simulate_profile(CHAIN, chain_behaviour(), SIZES[:2], 2))
    assert all(sm.untrusted_reason == "profiled on 2 size(s), needs 3" for sm in model.stages_.values())
