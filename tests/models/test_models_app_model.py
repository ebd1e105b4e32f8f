"""AppModel: fit on a profile, report, propagate through the DAG, trust, speed."""

from __future__ import annotations

import math
import statistics
import time

import pandas as pd
import pytest

from models import METRICS, AppModel
from profiler.synthetic import CHAIN, CHUNK, FEATURED, Behaviour, chain_behaviour, simulate_profile
from sonic.app import App
from sonic.errors import NotFittedError, UserInputError

MB = 1_000_000
SIZES = [2 * MB, 4 * MB, 8 * MB, 16 * MB, 32 * MB]


def test_report_has_every_stage_and_metric_with_small_holdout_error(chain_profile: pd.DataFrame) -> None:
    model = AppModel("chain").fit(chain_profile)
    rows = model.report()
    assert [(r["stage"], r["metric"]) for r in rows] == [(s, m) for s in ("split", "work", "merge") for m in METRICS]
    for row in rows:
        assert set(row) >= {"stage", "metric", "model", "n_samples", "mape"}
        assert row["mape"] is not None and 0 <= row["mape"] <= 0.10, row
        assert row["trusted"]
    assert next(r for r in rows if r["stage"] == "work" and r["metric"] == "fanout")["model"] == "step"


def test_prediction_propagates_through_the_dag(chain_profile: pd.DataFrame) -> None:
    model = AppModel("chain").fit(chain_profile)
    size = 64 * MB  # 2x beyond the largest profiled size
    pred = model.predict(CHAIN, size)
    split, work, merge = (pred.stages[s] for s in ("split", "work", "merge"))
    assert split.instances == 1 and split.input_bytes == size
    assert split.output_bytes.mean == pytest.approx(size, rel=1e-6)
    assert abs(work.instances - math.ceil(size / CHUNK)) <= 1  # ceil of an estimated chunk size
    assert work.input_bytes == pytest.approx(split.total_output_bytes / work.instances)
    assert merge.instances == 1 and merge.input_bytes == pytest.approx(work.total_output_bytes)
    truth = chain_behaviour()
    assert merge.memory_mb.mean == pytest.approx(truth["merge"].memory(merge.input_bytes, size, {}), rel=0.01)
    assert merge.time_s.mean == pytest.approx(truth["merge"].time(merge.input_bytes, size, {}), rel=0.15)
    for s in pred.stages.values():
        assert s.time_s.hi >= s.time_s.mean > 0 and s.memory_mb.hi >= s.memory_mb.mean
    assert pred.untrusted_stages() == [] and pred.source == "models"


def test_one_to_one_and_broadcast_edges() -> None:
    app = App("shapes")
    app.add_stage(lambda ctx: None, name="src")
    app.add_stage(lambda ctx: None, name="part", after="src", pattern="scatter")
    app.add_stage(lambda ctx: None, name="each", after="part", pattern="one-to-one")
    app.add_stage(lambda ctx: None, name="bcast", after="each", pattern="broadcast", instances=3)
    app.validate()
    same = {"time": lambda x, a, f: 0.01 + 1e-8 * x, "memory": lambda x, a, f: 50 + x / MB,
            "output": lambda x, a, f: x}
    behaviour = {n: Behaviour(**same) for n in ("src", "each", "bcast")}
    behaviour["part"] = Behaviour(**{**same, "output": lambda x, a, f: x / 2},
                                  fanout=lambda a, f: math.ceil(a / (2 * MB)))
    model = AppModel("shapes").fit(simulate_profile(app, behaviour, SIZES, 2))
    pred = model.predict(app, 64 * MB)
    assert pred.stages["part"].instances == 32
    assert pred.stages["each"].instances == 32  # one-to-one follows its producer
    assert pred.stages["each"].input_bytes == pytest.approx(pred.stages["part"].output_bytes.mean)
    assert pred.stages["bcast"].instances == 3  # fixed by the DAG
    assert pred.stages["bcast"].input_bytes == pytest.approx(pred.stages["each"].total_output_bytes)


def test_features_improve_the_time_model() -> None:
    behaviour = chain_behaviour(complexity_feature=True)
    behaviour["work"] = Behaviour(behaviour["work"].time, behaviour["work"].memory, behaviour["work"].output,
                                  fanout=behaviour["work"].fanout)
    profile = simulate_profile(FEATURED, behaviour, SIZES, 4,
                               features=lambda size, run: {"complexity": float(1 + (size // MB + run) % 4)})
    model = AppModel("featured").fit(profile)
    row = next(r for r in model.report() if r["stage"] == "work" and r["metric"] == "time")
    assert row["model"].endswith("+complexity") and row["mape"] <= 0.05
    easy = model.predict(FEATURED, 64 * MB, {"complexity": 1.0}).stages["work"].time_s.mean
    hard = model.predict(FEATURED, 64 * MB, {"complexity": 4.0}).stages["work"].time_s.mean
    assert hard > 2.5 * easy
    assert model.predict(FEATURED, 64 * MB).stages["work"].time_s.mean > 0  # no features: size-only


def test_few_sizes_are_untrusted(chain_profile: pd.DataFrame) -> None:
    two = chain_profile[chain_profile["size"] <= 4 * MB]
    pred = AppModel("chain").fit(two).predict(CHAIN, 8 * MB)
    assert set(pred.untrusted_stages()) == {"split", "work", "merge"}


def test_unfitted_and_bad_requests(chain_profile: pd.DataFrame) -> None:
    with pytest.raises(NotFittedError, match="sonic profile chain"):
        AppModel("chain").predict(CHAIN, MB)
    with pytest.raises(NotFittedError, match="sonic profile chain"):
        AppModel("chain").report()
    with pytest.raises(NotFittedError, match="no measurements"):
        AppModel("chain").fit(chain_profile.iloc[0:0])
    with pytest.raises(UserInputError, match="lacks columns"):
        AppModel("chain").fit(pd.DataFrame({"stage": ["x"]}))
    model = AppModel("chain").fit(chain_profile)
    with pytest.raises(UserInputError, match="not 'featured'"):
        model.predict(FEATURED, MB)
    with pytest.raises(UserInputError, match="positive"):
        model.predict(CHAIN, 0)
    partial = AppModel("chain").fit(chain_profile[chain_profile["stage"] != "merge"])
    with pytest.raises(NotFittedError, match="stage 'merge'"):
        partial.predict(CHAIN, MB)


def test_failed_instances_are_ignored(chain_profile: pd.DataFrame) -> None:
    broken = chain_profile.copy()
    broken.loc[broken.index[:3], "error"] = "boom"
    broken.loc[broken.index[:3], "wall_s"] = 1e6
    model = AppModel("chain").fit(broken)
    assert model.predict(CHAIN, 64 * MB).stages["split"].time_s.mean < 1


def test_prediction_takes_well_under_5ms(chain_profile: pd.DataFrame) -> None:
    model = AppModel("chain").fit(chain_profile)
    times = []
    for i in range(200):
        t0 = time.perf_counter()
        model.predict(CHAIN, (i + 1) * MB)
        times.append(time.perf_counter() - t0)
    assert statistics.median(times) < 0.005
