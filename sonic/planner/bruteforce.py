"""Brute force: every method/placement combination of a small DAG, scored by the cost model.

The yardstick of the optimiser's exactness. It walks the same search space
(:mod:`sonic.planner.space`) without any state, pruning or Pareto set: for every assignment
of a method to each edge and a placement to each stage (consumers of an in-place method,
VM-Storage, placed on their input, the others at every canonical placement) it calls
:meth:`CostModel.evaluate`, which scores the whole plan independently of the DP (explicit
sets of used and cold VMs, uploads derived from the chosen methods). Exponential: for tests on <= 5 stages and <= 3 VMs.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

from sonic.app import App
from sonic.cluster.spec import ClusterSpec
from sonic.errors import InfeasibleError, TooManyPlans
from sonic.passing import PlanMethod
from sonic.planner.cost import Assignment, CostModel, objective_value
from sonic.planner.methods import in_place
from sonic.planner.optimise import Candidate
from sonic.planner.placement import Placement, PlacementSpace
from sonic.planner.problem import Problem, WarmSpec, build_problem
from sonic.planner.space import SearchSpace, strategy_spaces
from sonic.prediction import AppPrediction


# A scored plan is the optimiser's own `Candidate` (latency, dollars, assignment): one type for both.
@dataclass(frozen=True)
class BruteForceResult:
    value: float                 # the objective value of the best plan
    latency_s: float
    cost_usd: float
    assignment: Assignment
    plans: int                   # plans scored (meeting the constraints or not)


def assignments(problem: Problem, space: PlacementSpace, model: CostModel, ss: SearchSpace) -> Iterator[Assignment]:
    """Every assignment of the search space, in topological order of decisions."""
    order = problem.order
    placements: dict[str, Placement] = {}
    methods: dict[tuple[str, str], PlanMethod] = {}

    def walk(i: int) -> Iterator[Assignment]:
        if i == len(order):
            yield Assignment(dict(placements), dict(methods))
            return
        name = order[i]
        ins = problem.in_edges[name]
        n = problem.stages[name].instances
        for choice in itertools.product(*(ss.methods[e.index] for e in ins)):
            pinned: set[int] = set()
            consumer: Placement | None = None
            for e, m in zip(ins, choice):
                if in_place(m):
                    f = space.follow(e.pattern, placements[e.src], n)
                    pinned.add(-1 if f is None else f.id)
                    consumer = f
            if -1 in pinned or len(pinned) > 1:
                continue
            if consumer is not None and not model.fits(name, consumer):
                continue
            for e, m in zip(ins, choice):
                methods[(e.src, e.dst)] = m
            for p in ([consumer] if consumer is not None else ss.placements[name]):
                placements[name] = p
                yield from walk(i + 1)
            placements.pop(name, None)

    return walk(0)


def score_all(app: App, prediction: AppPrediction, cluster: ClusterSpec, *, strategy: str = "sonic",
              warm: WarmSpec = None, limit: int = 1_000_000) -> list[Candidate]:
    """Every plan of the strategy's search space with its latency and dollars.

    Raises :class:`TooManyPlans` beyond ``limit`` plans, and :class:`InfeasibleError` like the
    optimiser when no plan can exist (a stage that fits no VM).
    """
    problem = build_problem(app, prediction, cluster, warm)
    space = PlacementSpace(problem.vms)
    model = CostModel(problem, space)
    scored: list[Candidate] = []
    for ss in strategy_spaces(problem, space, model, "sonic" if strategy == "oracle" else strategy):
        for assignment in assignments(problem, space, model, ss):
            if len(scored) >= limit:
                raise TooManyPlans(f"brute force stopped after {limit} plans; the DAG is too large for it")
            ev = model.evaluate(assignment)
            scored.append(Candidate(ev.latency_s, ev.cost_usd, assignment))
    return scored


def best_of(scored: list[Candidate], *, objective: str = "latency", budget: float | None = None,
            deadline: float | None = None) -> BruteForceResult | None:
    """The plan minimising ``objective`` among those meeting the constraints (``None``: none does)."""
    best: Candidate | None = None
    best_value = 0.0
    for plan in scored:
        if budget is not None and plan.cost_usd > budget * (1 + 1e-9):
            continue
        if deadline is not None and plan.latency_s > deadline * (1 + 1e-9):
            continue
        value = objective_value(objective, plan.latency_s, plan.cost_usd)
        if best is None or value < best_value:
            best, best_value = plan, value
    if best is None:
        return None
    return BruteForceResult(best_value, best.latency_s, best.cost_usd, best.assignment, len(scored))


def brute_force_elastic(app: App, options: list[AppPrediction], cluster: ClusterSpec, *,
                        objective: str = "latency", strategy: str = "sonic", budget: float | None = None,
                        deadline: float | None = None, warm: WarmSpec = None,
                        limit: int = 1_000_000) -> BruteForceResult | None:
    """The best plan over every count option (each an app prediction with its elastic stages'
    counts) and every plan of each, by exhaustive search; ``None`` if none meets the request.
    Options whose stages fit no VM contribute no plan, as in the optimiser."""
    scored: list[Candidate] = []
    for option in options:
        try:
            scored += score_all(app, option, cluster, strategy=strategy, warm=warm, limit=limit)
        except InfeasibleError:
            continue
    return best_of(scored, objective=objective, budget=budget, deadline=deadline)
