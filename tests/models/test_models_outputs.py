"""An instance feeding a shuffle writes one output per consumer instance, and every output
costs time: the time model regresses on the outputs written, and a prediction gives a map
the outputs its planned reduce count makes it write (what a larger R costs the maps)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models import AppModel
from models.app_model import OutputsPerInstance
from profiler.synthetic import Behaviour, simulate_profile
from sonic.app import load_app

MB = 1_000_000
PER_OUTPUT_S = 4e-4
COUNTS = (1, 4, 16, 64)


def _map_time(x: float, outputs: float) -> float:
    return 2e-3 + 2e-9 * x + PER_OUTPUT_S * outputs


def _sweep_profile() -> pd.DataFrame:
    """Sort's DAG profiled as `sonic profile` sweeps an elastic app: at every size, runs with
    M = R = 1, 4, 16, 64; split writes M chunks and every map R partitions."""
    def fanout(a: float, f: dict[str, float]) -> int:
        return int(f["k"])

    flat = Behaviour(time=lambda x, a, f: 1e-3 + 1e-9 * x, memory=lambda x, a, f: 80.0,
                     output=lambda x, a, f: x, fanout=fanout)
    behaviour = {"split": Behaviour(time=lambda x, a, f: 1e-3 + 1e-9 * x, memory=lambda x, a, f: 80.0,
                                    output=lambda x, a, f: x),
                 "map": flat, "reduce": flat}
    rows = simulate_profile(load_app("sort"), behaviour, [8 * MB, 16 * MB, 32 * MB, 64 * MB, 128 * MB],
                            len(COUNTS), features=lambda size, r: {"k": float(COUNTS[r])})
    k = rows["feat_k"].to_numpy(dtype=float)
    writes = rows["stage"].isin(["split", "map"]).to_numpy()
    rows["n_outputs"] = np.where(writes, k, 1).astype("int64")
    is_map = (rows["stage"] == "map").to_numpy()
    rows.loc[is_map, "wall_s"] = [_map_time(x, o) for x, o in zip(rows.loc[is_map, "input_bytes"],
                                                                   rows.loc[is_map, "n_outputs"])]
    return rows.drop(columns=["feat_k"])


@pytest.fixture(scope="module")
def fitted() -> AppModel:
    return AppModel.for_app(load_app("sort")).fit(_sweep_profile())


def test_outputs_per_instance_follow_the_consumer_count(fitted: AppModel) -> None:
    assert fitted.stages_["map"].outputs == OutputsPerInstance(constant=pytest.approx(10.0), per_consumer=1.0,
                                                               consumers=("reduce",))
    assert fitted.stages_["split"].outputs is not None and fitted.stages_["split"].outputs.per_consumer == 1.0
    assert fitted.stages_["reduce"].outputs is None  # writes one file in every run: nothing to learn


def test_map_time_grows_with_the_reduce_count_it_writes_for(fitted: AppModel) -> None:
    app = load_app("sort")
    assert fitted.stages_["map"].metrics["time"].model_name_.endswith("+outputs")
    for reducers in (16, 256):
        p = fitted.predict(app, 1_000 * MB, observed_instances={"map": 16, "reduce": reducers})
        truth = _map_time(p.stages["map"].input_bytes, reducers)
        assert p.stages["map"].time_s.mean == pytest.approx(truth, rel=0.05)


def test_constant_outputs_win_when_the_count_does_not_follow_consumers() -> None:
    outputs = np.array([1.0, 1.0, 1.0, 1.0])
    assert OutputsPerInstance.fit(outputs, np.array([1.0, 4.0, 16.0, 64.0])) == OutputsPerInstance(1.0)
    assert OutputsPerInstance.fit(np.array([0.0, 0.0]), np.array([2.0, 4.0])).constant == 0.0  # no division by 0
    proportional = OutputsPerInstance.fit(np.array([2.0, 8.0, 32.0]), np.array([1.0, 4.0, 16.0]))
    assert proportional.per_consumer == 2.0 and proportional.predict(100) == 200.0


def test_models_without_the_dag_predict_as_before() -> None:
    """`AppModel(name)` (no DAG given) has no outputs model: the time model sees no new column."""
    model = AppModel("sort").fit(_sweep_profile())
    assert all(sm.outputs is None for sm in model.stages_.values())
