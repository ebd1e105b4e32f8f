"""Greedy per-edge choices are worse than the DP: a decision that looks best for one edge
(spread the consumers out) can make the next edge expensive (a gather that must pull
everything back over one NIC)."""

from __future__ import annotations

import itertools

from planner_samples import _noop, cluster, prediction_for, stage_prediction

from sonic.app import App
from sonic.cluster.spec import ClusterSpec
from sonic.plan import PassingMethod
from sonic.planner import make_plan
from sonic.planner.cost import Assignment, CostModel, Input
from sonic.planner.placement import Placement, PlacementSpace
from sonic.planner.problem import build_problem
from sonic.prediction import AppPrediction

MB = 1_000_000
METHODS = (PassingMethod.VM, PassingMethod.DIRECT, PassingMethod.REMOTE)


def greedy(app: App, prediction: AppPrediction, spec: ClusterSpec) -> tuple[Assignment, float]:
    """Stage by stage, the in-edge methods and placement that finish *this* stage first."""
    problem = build_problem(app, prediction, spec)
    space = PlacementSpace(problem.vms)
    model = CostModel(problem, space)
    placements: dict[str, Placement] = {}
    methods: dict[tuple[str, str], PassingMethod] = {}
    finish: dict[str, float] = {}
    for name in problem.order:
        ins = problem.in_edges[name]
        n = problem.stages[name].instances
        best: tuple[float, Placement, tuple[PassingMethod, ...]] | None = None
        for choice in itertools.product(METHODS, repeat=len(ins)):
            pinned = {space.follow(e.pattern, placements[e.src], n) for e, m in zip(ins, choice)
                      if m is PassingMethod.VM}
            if None in pinned or len(pinned) > 1:
                continue
            for pc in (list(pinned) if pinned else space.canonical(n)):
                assert pc is not None
                if not model.fits(name, pc):
                    continue
                inputs: list[Input] = [(e, m, placements[e.src]) for e, m in zip(ins, choice)]
                start = max([finish[e.src] for e in ins], default=0.0)
                done = start + model.stage_time(name, pc, inputs, False)
                if best is None or done < best[0]:
                    best = (done, pc, choice)
        assert best is not None
        finish[name], placements[name] = best[0], best[1]
        for e, m in zip(ins, best[2]):
            methods[(e.src, e.dst)] = m
    assignment = Assignment(placements, methods)
    return assignment, model.evaluate(assignment).latency_s


def test_greedy_per_edge_choice_is_worse_than_the_optimum() -> None:
    app = App("spread-then-gather")
    app.add_stage(_noop, name="split")
    app.add_stage(_noop, name="work", after="split", pattern="scatter")
    app.add_stage(_noop, name="merge", after="work", pattern="gather")
    pred = prediction_for(app, 0, {
        "split": stage_prediction("split", 1, 0.2, 200, 4 * MB),
        "work": stage_prediction("work", 4, 1.0, 200, 300 * MB),   # light compute, big output
        "merge": stage_prediction("merge", 1, 0.5, 200, MB),
    })
    spec = cluster(2, cores=2)
    assignment, greedy_latency = greedy(app, pred, spec)
    # Greedy spreads `work` over both VMs (one wave instead of two) ...
    assert len(assignment.placements["work"].vms) == 2
    plan = make_plan(app, pred, spec)
    # ... and then the gather pulls 600 MB through one NIC; the DP keeps everything on vm0.
    assert plan.edge("work", "merge").method is PassingMethod.VM
    assert plan.predicted["latency_s"] < greedy_latency * 0.9
