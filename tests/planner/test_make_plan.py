"""make_plan: the Plan it returns, baselines from the same planner, trust fallback, views."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from planner_samples import cluster, lightgbm, samples, sort, video

import sonic.planner
from sonic.metrics import InstanceMetrics, RunResult, StageMetrics
from sonic.plan import PassingMethod, Plan
from sonic.planner import make_plan, render_dot, render_table
from sonic.planner.cost import CostModel, objective_value
from sonic.planner.optimise import optimise
from sonic.planner.placement import PlacementSpace
from sonic.planner.problem import build_problem
from sonic.prediction import AppPrediction

METHODS = {"vm", "direct", "remote"}


def test_public_names() -> None:
    assert set(sonic.planner.__all__) == {"make_plan", "render_table", "render_dot"}


@pytest.mark.parametrize("name", ["video", "lightgbm", "sort"])
@pytest.mark.parametrize("objective", ["latency", "cost", "perf-per-dollar"])
def test_plan_shape_for_the_sample_apps(name: str, objective: str) -> None:
    app, pred = samples()[name]
    spec = cluster(4)
    plan = make_plan(app, pred, spec, objective=objective)
    plan.check(app, spec.vm_names)
    assert (plan.app, plan.objective, plan.strategy) == (name, objective, "sonic")
    assert plan.input_bytes == pred.input_bytes
    for stage, sp in plan.stages.items():
        assert sum(sp.placement.values()) == sp.instances == pred.stages[stage].instances
        assert sp.memory_mb == pred.stages[stage].memory_mb.hi
        assert all(count > 0 for count in sp.placement.values())
    for e in plan.edges:
        assert set(e.predicted_s) == METHODS
        assert all(seconds > 0 for seconds in e.predicted_s.values())
        assert e.pattern == app.graph.edges[e.src, e.dst]["edge"].pattern.value
    assert plan.predicted["latency_s"] > 0 and plan.predicted["cost_usd"] > 0
    again = Plan.from_json(json.loads(json.dumps(plan.to_json())))
    assert again.to_json() == plan.to_json()


def test_vm_edges_keep_consumers_on_their_input() -> None:
    app, pred = video()
    plan = make_plan(app, pred, cluster(4), objective="cost")   # cheap: VM-Storage everywhere
    for e in plan.edges:
        assert e.method is PassingMethod.VM
    # scatter from one instance: every consumer on the producer's VM; one-to-one: same counts.
    assert plan.stages["extract"].placement == {"vm0": 19}
    assert plan.stages["classify"].placement == plan.stages["extract"].placement


def test_objectives_trade_off() -> None:
    app, pred = video()
    spec = cluster(4)
    plans = {o: make_plan(app, pred, spec, objective=o) for o in ("latency", "cost", "perf-per-dollar")}
    lat = {o: p.predicted["latency_s"] for o, p in plans.items()}
    usd = {o: p.predicted["cost_usd"] for o, p in plans.items()}
    assert lat["latency"] <= min(lat.values())
    assert usd["cost"] <= min(usd.values())
    assert lat["perf-per-dollar"] * usd["perf-per-dollar"] <= min(lat[o] * usd[o] for o in plans) * (1 + 1e-12)
    assert lat["latency"] < lat["cost"] and usd["cost"] < usd["latency"]


@pytest.mark.parametrize("strategy", ["remote", "direct", "vm"])
def test_baselines_fix_the_method_and_still_place(strategy: str) -> None:
    app, pred = sort()
    spec = cluster(4)
    plan = make_plan(app, pred, spec, strategy=strategy)
    assert plan.strategy == strategy
    assert {e.method.value for e in plan.edges} == {strategy}
    used = {vm for s in plan.stages.values() for vm in s.placement}
    if strategy == "vm":
        assert used == {"vm0"}                       # SAND-style: one VM
        assert any("SAND" in note for note in plan.notes)
    else:
        assert len(used) > 1                         # placement still optimised: spread out
    sonic_plan = make_plan(app, pred, spec)
    assert sonic_plan.predicted["latency_s"] <= plan.predicted["latency_s"] + 1e-12


def _measured(pred: AppPrediction) -> RunResult:
    """A fake measured run equal to the prediction (what AppPrediction.from_run reads)."""
    stages, instances = [], []
    for name, s in pred.stages.items():
        stages.append(StageMetrics(name, s.instances, s.time_s.mean, s.memory_mb.hi))
        for i in range(s.instances):
            instances.append(InstanceMetrics(name, i, int(s.input_bytes), int(s.output_bytes.mean), 1,
                                             s.time_s.mean, s.memory_mb.hi, 0.0, s.time_s.mean))
    return RunResult(pred.app, "sonic", pred.input_bytes, 1.0, True, "", [], stages, instances)


def test_oracle_is_the_optimiser_on_measured_parameters() -> None:
    app, pred = lightgbm()
    measured = AppPrediction.from_run(_measured(pred))
    oracle = make_plan(app, measured, cluster(4), strategy="oracle")
    sonic_plan = make_plan(app, measured, cluster(4), strategy="sonic")
    assert oracle.strategy == "oracle"
    assert [e.method for e in oracle.edges] == [e.method for e in sonic_plan.edges]
    assert oracle.predicted == sonic_plan.predicted


def test_untrusted_stages_fall_back_to_remote_storage_with_a_note() -> None:
    app, pred = video()
    stages = dict(pred.stages)
    stages["extract"] = replace(stages["extract"], trusted=False)
    plan = make_plan(app, replace(pred, stages=stages), cluster(4))
    methods = {(e.src, e.dst): e.method for e in plan.edges}
    assert methods[("split", "extract")] is PassingMethod.REMOTE
    assert methods[("extract", "classify")] is PassingMethod.REMOTE
    assert any("extract" in note and "Remote-Storage" in note for note in plan.notes)
    trusted = make_plan(app, pred, cluster(4))
    assert any(e.method is not PassingMethod.REMOTE for e in trusted.edges)
    assert not any("trusted" in note for note in trusted.notes)


def test_warm_pool_skips_the_cold_start() -> None:
    app, pred = sort()
    spec = cluster(4)
    cold = make_plan(app, pred, spec)
    warm = make_plan(app, pred, spec, warm=spec.vm_names)
    assert any("cold start" in note for note in cold.notes)
    assert not any("cold start" in note for note in warm.notes)
    assert warm.predicted["latency_s"] == pytest.approx(cold.predicted["latency_s"] - spec.calibration.cold_start_s)


def test_dp_value_is_the_cost_models_value_of_the_plan() -> None:
    for objective in ("latency", "cost", "perf-per-dollar"):
        for app, pred in samples().values():
            problem = build_problem(app, pred, cluster(4))
            space = PlacementSpace(problem.vms)
            model = CostModel(problem, space)
            best, _ = optimise(problem, space, model, objective=objective)
            ev = model.evaluate(best.assignment)
            assert ev.latency_s == pytest.approx(best.latency_s, rel=1e-12)
            if objective != "latency":
                assert ev.cost_usd == pytest.approx(best.cost_usd, rel=1e-12)
            assert objective_value(objective, ev.latency_s, ev.cost_usd) > 0


def test_heterogeneous_cluster_uses_the_right_vms() -> None:
    app, pred = lightgbm()
    spec = cluster(3)
    spec.vms[2].memory_mb = 1024            # too small for `train` (1200 MB)
    plan = make_plan(app, pred, spec)
    assert "vm2" not in plan.stages["train"].placement


def test_render_table_and_dot() -> None:
    app, pred = video()
    plan = make_plan(app, pred, cluster(4))
    table = render_table(plan)
    for e in plan.edges:
        assert f"{e.src} -> {e.dst}" in table
    assert "vm s" in table and "direct s" in table and "remote s" in table
    assert "predicted latency" in table and "$" in table
    for name, s in plan.stages.items():
        line = next(row for row in table.splitlines() if row.split()[:2] == [name, str(s.instances)])
        for vm, count in s.placement.items():
            assert f"{vm}:{count}" in line
    dot = render_dot(plan, app)
    assert dot.startswith('digraph "video" {') and dot.rstrip().endswith("}")
    for e in plan.edges:
        assert f'"{e.src}" -> "{e.dst}" [label="{e.method.value}' in dot


def test_planning_is_pure() -> None:
    app, pred = video()
    spec = cluster(4)
    before = (json.dumps(pred.to_json(), sort_keys=True), json.dumps(spec.to_dict(), sort_keys=True))
    first = make_plan(app, pred, spec).to_json()
    second = make_plan(app, pred, spec).to_json()
    assert first == second
    assert before == (json.dumps(pred.to_json(), sort_keys=True), json.dumps(spec.to_dict(), sort_keys=True))


@pytest.mark.parametrize("objective", ["latency", "cost", "perf-per-dollar"])
def test_branch_and_bound_changes_nothing_but_speed(objective: str) -> None:
    for app, pred in samples().values():
        problem = build_problem(app, pred, cluster(4))
        space = PlacementSpace(problem.vms)
        model = CostModel(problem, space)
        pruned, _ = optimise(problem, space, model, objective=objective)
        full, _ = optimise(problem, space, model, objective=objective, prune=False)
        assert objective_value(objective, pruned.latency_s, pruned.cost_usd) == pytest.approx(
            objective_value(objective, full.latency_s, full.cost_usd), rel=1e-9)
