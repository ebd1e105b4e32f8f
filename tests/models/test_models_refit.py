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


def test_learn_reverts_a_refit_whose_runs_predict_the_next_run_worse(tmp_path: Path) -> None:
    """A mismeasured run (1.2x the memory: not enough to cost a stage its trust) is accepted
    on probation; the next, normal run is predicted worse by the models that learned from it
    than by the models before, so the refit is reverted and the bad run is left out for good."""
    import json

    assert all(sm.trusted for sm in _profiled(tmp_path).stages_.values())
    poisoned = {name: dataclasses.replace(b, memory=lambda x, a, f, m=b.memory: 1.2 * m(x, a, f))
                for name, b in chain_behaviour().items()}
    # At a new, larger size the bad run alone decides the fit there (robust pooling absorbs
    # one bad run among others of the same size: then the refit is rightly confirmed).
    first = learn(CHAIN, simulate_run(CHAIN, poisoned, 64_000_000), tmp_path)
    assert first.recorded
    second = learn(CHAIN, simulate_run(CHAIN, chain_behaviour(), 48_000_000), tmp_path)
    assert first.replaced and "probation" in first.reason, first.line
    assert "reverted" in second.reason and "memory" in second.reason, second.line
    trial = json.loads((tmp_path / "models" / "chain" / "trial.json").read_text())
    assert len(trial["excluded"]) == 1
    assert all(sm.trusted for sm in AppModel.load("chain", tmp_path).stages_.values())  # plans never got worse
    assert len(ProfileStore(tmp_path).parts("chain")) == 3  # every run's rows are kept in the profile


def test_learn_confirms_a_refit_that_predicts_the_next_run_as_well(tmp_path: Path) -> None:
    _profiled(tmp_path)
    first = learn(CHAIN, simulate_run(CHAIN, chain_behaviour(), 12_000_000), tmp_path)
    second = learn(CHAIN, simulate_run(CHAIN, chain_behaviour(), 20_000_000), tmp_path)
    assert first.replaced and "probation" in first.reason
    assert "confirmed" in second.reason, second.line
    assert second.champion_error is not None and second.challenger_error is not None


def test_refits_from_runs_that_differ_only_by_timing_noise_are_confirmed(tmp_path: Path) -> None:
    """Models refitted with one more sound run predict the next one a little better or a
    little worse by chance; a strict comparison reverted 3-4 of 11 such refits and left those
    runs out for good. Differences within the measurement noise are ties."""
    import random

    _profiled(tmp_path)
    rng = random.Random(5)
    reasons = [learn(CHAIN, simulate_run(CHAIN, chain_behaviour(), rng.choice(SIZES), noise=0.3, rng=rng),
                     tmp_path).reason for _ in range(12)]
    assert not [r for r in reasons if "reverted" in r], reasons
    assert sum("confirmed" in r for r in reasons) == 11


def test_a_mismeasured_run_that_costs_trust_is_never_adopted(tmp_path: Path) -> None:
    _profiled(tmp_path)
    poisoned = {name: dataclasses.replace(b, memory=lambda x, a, f, m=b.memory: 3 * m(x, a, f))
                for name, b in chain_behaviour().items()}
    outcome = learn(CHAIN, simulate_run(CHAIN, poisoned, 64_000_000), tmp_path)
    assert not outcome.replaced and "would no longer trust" in outcome.reason
    assert all(sm.trusted for sm in AppModel.load("chain", tmp_path).stages_.values())


def test_learn_replaces_the_models_with_a_refit_that_predicts_as_well(tmp_path: Path) -> None:
    champion = _profiled(tmp_path)
    outcome = learn(CHAIN, simulate_run(CHAIN, chain_behaviour(), 12_000_000), tmp_path)
    assert outcome.replaced, outcome.line
    assert outcome.line.startswith("models: refitted") and "probation" in outcome.line
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
