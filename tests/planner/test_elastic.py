"""Elastic parallelism: the planner's choice of counts equals brute force over counts x plans.

Random small DAGs (2-4 stages) with one or two elastic scatter consumers, per-instance
predictions that scale with the bytes per instance (as the models do), random clusters,
objectives and constraints: :func:`make_elastic_plan` must reach the objective value of the
exhaustive search over every count option and every plan of each, and agree on infeasibility.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from planner_cases import clusters
from planner_samples import _noop, cluster, stage_prediction

from sonic.app import App
from sonic.errors import InfeasibleError, PlanError
from sonic.plan import Plan
from sonic.planner import make_plan, render_table
from sonic.planner.bruteforce import TooManyPlans, brute_force_elastic
from sonic.planner.cost import objective_value
from sonic.planner.elastic import make_elastic_plan
from sonic.prediction import AppPrediction

MB = 1_000_000


def _options(app: App, input_bytes: float, grids: dict[str, list[int]], cost: dict[str, tuple[float, float, float]],
             fixed: dict[str, int]) -> list[AppPrediction]:
    """One prediction per count combination: a stage's instance reads its share of the bytes
    flowing in; time and memory grow linearly with them (``cost[s]`` = (s per MB, MB per MB,
    fixed seconds)), output bytes equal input bytes."""
    options = []
    for counts in itertools.product(*grids.values()):
        chosen = dict(zip(grids, counts))
        preds = {}
        total_in: dict[str, float] = {}
        for name in app.topological_order():
            ins = app.in_edges(name)
            n = chosen.get(name, fixed.get(name, 1))
            if any(e.pattern.value == "one-to-one" for e in ins):
                n = preds[ins[0].src].instances
            if any(e.pattern.value == "gather" for e in ins):
                n = 1
            total = input_bytes if not ins else sum(total_in[e.src] for e in ins)
            total_in[name] = total
            per = total / n
            per_mb, mem_per_mb, fixed_s = cost[name]
            preds[name] = stage_prediction(name, n, fixed_s + per_mb * per / MB, 50 + mem_per_mb * per / MB, per,
                                           input_bytes=per)
        options.append(AppPrediction(app.name, int(input_bytes), preds))
    return options


@st.composite
def elastic_cases(draw: st.DrawFn) -> tuple[App, list[AppPrediction], object, str, str]:
    app = App("elastic")
    app.add_stage(_noop, name="s0")
    grids: dict[str, list[int]] = {}
    bounds = (1, 8)
    app.add_stage(_noop, name="s1", after="s0", pattern="scatter", parallelism=bounds)
    grids["s1"] = sorted(set(draw(st.lists(st.sampled_from([1, 2, 3, 4, 8]), min_size=1, max_size=3))))
    n_stages = draw(st.integers(2, 4))
    fixed: dict[str, int] = {}
    if n_stages >= 3:
        pattern = draw(st.sampled_from(["scatter", "scatter", "one-to-one", "gather"]))
        elastic = pattern == "scatter" and draw(st.booleans())
        app.add_stage(_noop, name="s2", after="s1", pattern=pattern, parallelism=bounds if elastic else None)
        if elastic:
            grids["s2"] = sorted(set(draw(st.lists(st.sampled_from([1, 2, 4]), min_size=1, max_size=2))))
        elif pattern == "scatter":
            fixed["s2"] = draw(st.integers(1, 3))
    if n_stages >= 4:
        app.add_stage(_noop, name="s3", after=["s2"], pattern=draw(st.sampled_from(["gather", "broadcast"])))
    app.validate()
    cost = {name: (draw(st.floats(0.0, 0.5)), draw(st.sampled_from([0.0, 2.0, 20.0])), draw(st.floats(0.0, 2.0)))
            for name in app.topological_order()}
    input_bytes = draw(st.sampled_from([10 * MB, 100 * MB, 400 * MB]))
    options = _options(app, input_bytes, grids, cost, fixed)
    return (app, options, draw(clusters(max_vms=2)), draw(st.sampled_from(["latency", "cost", "perf-per-dollar"])),
            draw(st.sampled_from(["sonic", "sonic", "remote", "vm"])))


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(case=elastic_cases(), constraint=st.sampled_from([None, "budget", "deadline"]), factor=st.floats(0.8, 1.5))
def test_elastic_plan_matches_brute_force(case: tuple, constraint: str | None, factor: float) -> None:
    app, options, spec, objective, strategy = case
    try:
        free = brute_force_elastic(app, options, spec, objective=objective, strategy=strategy, limit=20_000)
    except TooManyPlans:
        assume(False)
        return
    budget = deadline = None
    if free is not None and constraint == "budget":
        budget = free.cost_usd * factor
    if free is not None and constraint == "deadline":
        deadline = free.latency_s * factor
    expected = brute_force_elastic(app, options, spec, objective=objective, strategy=strategy, budget=budget,
                                   deadline=deadline)
    try:
        plan, chosen = make_elastic_plan(app, options, spec, objective=objective, strategy=strategy,
                                         budget=budget, deadline=deadline)
    except InfeasibleError:
        assert expected is None
        return
    assert expected is not None
    value = objective_value(objective, plan.predicted["latency_s"], plan.predicted["cost_usd"])
    assert value == pytest.approx(expected.value, rel=1e-9, abs=1e-15)
    # The plan is the chosen option's: counts in the plan, the prediction and the choice agree.
    for name in app.elastic_stages():
        assert plan.stages[name].instances == chosen.stages[name].instances == plan.stages[name].parallelism.chosen
    assert Plan.from_json(plan.to_json()).to_json() == plan.to_json()


def _sort_like(per_mb_s: float, fixed_s: float) -> tuple[App, list[AppPrediction]]:
    app = App("sortish")
    app.add_stage(_noop, name="split")
    app.add_stage(_noop, name="map", after="split", pattern="scatter", parallelism=(1, 64))
    app.add_stage(_noop, name="reduce", after="map", pattern="scatter", parallelism=(1, 64))
    grid = [1, 2, 4, 8, 16, 32, 64]
    cost = {"split": (0.01, 1.0, 0.0), "map": (per_mb_s, 3.0, fixed_s), "reduce": (per_mb_s, 3.0, fixed_s)}
    return app, _options(app, 512 * MB, {"map": grid, "reduce": grid}, cost, {})


def test_more_instances_when_compute_dominates_fewer_when_overhead_does() -> None:
    spec = cluster(2, cores=4, memory_mb=16384)
    app, options = _sort_like(per_mb_s=0.05, fixed_s=0.0)
    heavy, _ = make_elastic_plan(app, options, spec, warm=spec.vm_names)
    one_core = cluster(1, cores=1, memory_mb=16384)
    app, options = _sort_like(per_mb_s=0.0001, fixed_s=2.0)
    light, _ = make_elastic_plan(app, options, one_core, warm=one_core.vm_names)
    assert heavy.stages["map"].instances >= 8          # compute spread over all 8 cores
    assert light.stages["map"].instances == 1          # on one core every extra instance costs 2 s
    choice = heavy.stages["map"].parallelism
    assert choice is not None and (choice.min, choice.max) == (1, 64)
    # The alternatives are every other count of the grid, each with a predicted latency.
    assert sorted(o.instances for o in choice.alternatives) == sorted({1, 2, 4, 8, 16, 32, 64} - {choice.chosen})
    assert all(o.latency_s is not None and o.latency_s >= heavy.predicted["latency_s"] - 1e-9
               for o in choice.alternatives)
    table = render_table(heavy)
    assert "elastic stage" in table and f"[{choice.chosen}: " in table


def test_a_plan_of_one_count_option_fixes_the_elastic_counts_it_was_costed_for() -> None:
    """``make_plan`` (a fixed strategy, the oracle, a caller with one prediction) records the
    elastic stages' counts as chosen, so the runtime runs the job the plan describes rather
    than the data-determined counts."""
    spec = cluster(2, cores=2, memory_mb=16384)
    app, options = _sort_like(per_mb_s=0.05, fixed_s=0.0)
    option = next(o for o in options if o.stages["map"].instances == 8 and o.stages["reduce"].instances == 16)
    for strategy in ("sonic", "vm", "remote"):
        plan = make_plan(app, option, spec, strategy=strategy, warm=spec.vm_names)
        assert plan.chosen_counts() == {"map": 8, "reduce": 16}, strategy
        assert Plan.from_json(plan.to_json()).check(app, spec.vm_names).chosen_counts() == {"map": 8, "reduce": 16}


def test_count_options_are_checked() -> None:
    spec = cluster(1)
    app, options = _sort_like(per_mb_s=0.05, fixed_s=0.1)
    with pytest.raises(PlanError, match="given twice"):
        make_elastic_plan(app, [options[0], options[0]], spec)
    outside = AppPrediction(app.name, options[0].input_bytes,
                            {**options[0].stages, "map": stage_prediction("map", 100, 1.0, 50, MB)})
    with pytest.raises(PlanError, match=r"outside its parallelism \[1, 64\]"):
        make_elastic_plan(app, [outside], spec)
    with pytest.raises(PlanError, match="no count options"):
        make_elastic_plan(app, [], spec)


def test_plan_json_rejects_a_bad_parallelism_choice() -> None:
    spec = cluster(1)
    app, options = _sort_like(per_mb_s=0.05, fixed_s=0.1)
    doc = make_elastic_plan(app, options, spec)[0].to_json()
    doc["stages"]["map"]["parallelism"]["chosen"] = 65
    with pytest.raises(PlanError, match=r"parallelism chosen 65 is outside \[1, 64\]"):
        Plan.from_json(doc)
    doc["stages"]["map"]["parallelism"]["chosen"] = "8"
    with pytest.raises(PlanError, match="parallelism must be an object with integer min, max and chosen"):
        Plan.from_json(doc)
