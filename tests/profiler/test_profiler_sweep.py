"""profile_app on small synthetic apps: real runs, crashes, injected executors, cold runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from profiler import ProfileStore, ProfilingError, ProgressEvent, profile_app
from profiler.synthetic import CHAIN, CRASHY, FEATURED, chain_behaviour, simulate_run
from sonic.app import App
from sonic.errors import ExecutionError, UserInputError
from sonic.execution import MEASUREMENT_SEMANTICS
from sonic.metrics import RunResult

SIZES = [64_000, 128_000, 256_000]


def test_sweep_records_every_instance_of_every_run(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path)
    events: list[ProgressEvent] = []
    summary = profile_app(CHAIN, SIZES, 2, store=store, progress=events.append)
    frame = store.load("chain")
    assert len(summary.run_ids) == 6 and len(summary.parts) == 6  # one part file per run
    assert summary.rows == len(frame) and frame["run_id"].nunique() == 6
    assert set(frame["size"].astype(int)) == set(SIZES)
    assert (frame["source"] == "reference").all() and not frame["cold"].any()
    work = frame[frame["stage"] == "work"]
    # work's fanout is one instance per 64 KiB chunk of the app input
    expected = {64_000: 1, 128_000: 2, 256_000: 4}
    assert {int(s): int(n) for s, n in work.groupby("size")["instances"].first().items()} == expected
    # wall_s is net of CPU waits: a tiny instance on a loaded machine may net to 0.
    assert (frame["wall_s"] >= 0).all() and (frame["wall_s"] > 0).any() and (frame["peak_memory_mb"] > 10).all()
    assert (frame["semantics"] == MEASUREMENT_SEMANTICS).all() and (frame["own_memory_mb"] >= 0).all()
    split = frame[frame["stage"] == "split"]
    assert (split["input_bytes"] == split["app_input_bytes"]).all()
    assert (split["output_bytes"] == split["input_bytes"]).all()
    done = [e for e in events if e.phase == "done"]
    assert len(done) == 6 and done[0].describe().startswith("size 64KB run 1/2 ... ")


def test_features_are_recorded(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path)
    profile_app(FEATURED, [128_000], 2, store=store, seed=1)
    frame = store.load("featured")
    assert sorted(frame["feat_complexity"].unique()) == [2.0, 3.0]  # seeds 1 and 2


def test_crashing_stage_names_stage_and_size_and_keeps_earlier_runs(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path)
    with pytest.raises(ProfilingError) as info:
        profile_app(CRASHY, [50_000, 200_000], 1, store=store)
    err = info.value
    assert err.stage == "work" and err.size == 200_000 and err.runs_recorded == 1
    text = str(err)
    assert "'work'" in text and "200KB" in text and "input too large" in text
    assert isinstance(err, ExecutionError)
    kept = store.load("crashy")
    assert set(kept["size"].astype(int)) == {50_000}  # the run before the crash is kept


def test_crash_is_reported_without_isolation_too(tmp_path: Path) -> None:
    with pytest.raises(ProfilingError, match="stage 'work'"):
        profile_app(CRASHY, [200_000], 1, store=ProfileStore(tmp_path), isolate=False)


def test_failing_generator_is_reported(tmp_path: Path) -> None:
    app = App("nogen")
    app.add_stage(lambda ctx: None, name="only")

    def broken(path: Path, size: int, seed: int) -> None:
        raise ValueError("disk full")

    app.generate_input(broken)
    with pytest.raises(ProfilingError, match="generator failed for size 1KB.*disk full"):
        profile_app(app, [1000], 1, store=ProfileStore(tmp_path))


@pytest.mark.parametrize("kwargs, message", [
    ({"sizes": [], "runs": 1}, "no sizes"),
    ({"sizes": [0], "runs": 1}, "positive"),
    ({"sizes": [1000], "runs": 0}, "--runs"),
])
def test_bad_arguments_are_user_errors(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        profile_app(CHAIN, store=ProfileStore(tmp_path), **kwargs)


def test_app_without_generator_is_a_user_error(tmp_path: Path) -> None:
    app = App("bare")
    app.add_stage(lambda ctx: None, name="only")
    with pytest.raises(UserInputError, match="generate_input"):
        profile_app(app, [1000], 1, store=ProfileStore(tmp_path))


def test_injected_executor_is_used_and_marked_as_cluster(tmp_path: Path) -> None:
    calls: list[int] = []

    def fake_cluster(app: App, path: Path) -> RunResult:
        calls.append(path.stat().st_size)
        result = simulate_run(app, chain_behaviour(), path.stat().st_size)
        result.strategy = "remote"
        return result

    store = ProfileStore(tmp_path)
    profile_app(CHAIN, SIZES, 1, store=store, executor_factory=fake_cluster)
    assert calls == SIZES
    assert (store.load("chain")["source"] == "cluster").all()


def test_cold_runs_start_fresh_interpreters(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path)
    profile_app(CHAIN, [64_000], 1, store=store, cold_runs=1)
    frame = store.load("chain")
    cold, warm = frame[frame["cold"]], frame[~frame["cold"]]
    assert len(cold) == len(warm) == 3
    # A cold instance pays interpreter start-up and imports: far more than the warm work.
    assert cold["wall_s"].min() > 5 * warm["wall_s"].max()
