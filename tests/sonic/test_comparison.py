"""Predicted vs actual: like is compared with like (sonic.comparison)."""

from __future__ import annotations

from sonic.comparison import compare, render
from sonic.metrics import EdgeMetrics, InstanceMetrics, RunResult, StageMetrics
from sonic.plan import EdgePlan, PassingMethod, Plan, StagePlan
from sonic.prediction import AppPrediction, Estimate, StagePrediction


def _instance(stage: str, index: int, started: float, ended: float) -> InstanceMetrics:
    return InstanceMetrics(stage=stage, instance=index, input_bytes=10, output_bytes=10, n_outputs=1,
                           wall_s=ended - started, peak_memory_mb=100.0, started=started, ended=ended,
                           own_memory_mb=20.0)


def _stage_prediction(name: str, instances: int, time_s: float) -> StagePrediction:
    return StagePrediction(name, instances, 10.0, Estimate.exact(time_s), Estimate.exact(100.0),
                           Estimate.exact(10.0))


def test_edge_residual_compares_the_span_the_planner_predicts() -> None:
    # a -> b, remote: the plan predicts 0.5 s from a's end to b's end; a's last instance ends at
    # t=1.0 and b's last at t=1.6, while the summed fetch/upload seconds are only 0.2 s.
    plan = Plan("x", 10, "latency", "remote",
                {"a": StagePlan(1, {"vm0": 1}), "b": StagePlan(2, {"vm0": 2})},
                [EdgePlan("a", "b", "all_to_all", PassingMethod.REMOTE, {"remote": 0.5, "vm": 0.1, "direct": 0.2})],
                predicted={"latency_s": 2.0})
    prediction = AppPrediction("x", 10, {"a": _stage_prediction("a", 1, 0.9), "b": _stage_prediction("b", 2, 0.25)},
                               worker_memory_mb=80.0)
    result = RunResult("x", "remote", 10, 1.8, True, "", [EdgeMetrics("a", "b", "remote", 20, 0.2)],
                       [StageMetrics("a", 1, 1.0, 100.0), StageMetrics("b", 2, 0.6, 100.0)],
                       instances=[_instance("a", 0, 0.1, 1.0), _instance("b", 0, 1.2, 1.4), _instance("b", 1, 1.4, 1.6)])
    doc = compare(plan, prediction, result)
    edge = doc["edges"][0]
    assert edge["seconds"]["predicted"] == 0.5
    assert abs(edge["seconds"]["actual"] - 0.6) < 1e-9
    assert abs(edge["seconds"]["residual"] - 0.2) < 1e-9
    assert edge["transfer_s"] == 0.2
    assert doc["latency_s"]["residual"] == round(1.8 / 2.0 - 1, 4)
    assert doc["stages"][1]["peak_memory_mb"]["actual"] == 100.0   # own 20 MB + the worker's 80 MB
    assert any("transfers 0.200 s" in line for line in render(doc))
