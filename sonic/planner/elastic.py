"""Elastic parallelism: choose the instance counts of elastic stages jointly with the plan.

A stage declared with ``parallelism=(min, max)`` (:class:`sonic.app.Parallelism`) has no
fixed instance count: every count changes the bytes per instance and so the predicted time,
memory and output of that stage (and of the stages it feeds). The caller (the I/O side,
:mod:`sonic.workflows.planning`) re-predicts the app once per candidate combination of counts and hands
the planner the list; each :class:`~sonic.prediction.AppPrediction` carries its counts as the
elastic stages' ``instances``. The planner stays pure: for every option it builds the problem
and runs the exact DP (:func:`sonic.planner.optimise.optimise`); the plan chosen is the best
over all options by the same selection rule (objective, then the secondary quantity, with
budget and deadline). This is exact over the candidate counts given: the optimum of the
cost model over (counts x methods x placements), which the brute force checks by scoring
every plan of every option (:func:`sonic.planner.bruteforce.brute_force_elastic`).

The plan records, per elastic stage, the count chosen and the best plan's latency and
dollars at every other candidate count of that stage with the other elastic stages at their
chosen counts (:class:`sonic.plan.ParallelismChoice`): why this count and not its neighbours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sonic.app import App
from sonic.cluster.spec import ClusterSpec
from sonic.errors import InfeasibleError, PlanError
from sonic.plan import CountOption, ParallelismChoice, Plan
from sonic.planner.assemble import assemble_plan
from sonic.planner.cost import CostModel
from sonic.planner.optimise import Candidate, check_request, optimise, select
from sonic.planner.placement import PlacementSpace
from sonic.planner.problem import Problem, WarmSpec, build_problem
from sonic.prediction import AppPrediction

#: The most count combinations one request may plan (each is one exact DP).
MAX_OPTIONS = 2_000


@dataclass(frozen=True)
class _Solved:
    counts: tuple[int, ...]
    candidate: Candidate
    problem: Problem
    space: PlacementSpace
    model: CostModel


def counts_of(app: App, prediction: AppPrediction) -> tuple[int, ...]:
    """The elastic stages' instance counts in ``prediction`` (in ``app.elastic_stages()`` order)."""
    return tuple(int(prediction.stages[s].instances) for s in app.elastic_stages())


def check_options(app: App, options: Sequence[AppPrediction]) -> None:
    elastic = app.elastic_stages()
    if not elastic:
        raise PlanError(f"app {app.name!r} has no elastic stage; plan it without count options")
    if not options:
        raise PlanError("no count options given for the elastic stages; give at least one prediction")
    if len(options) > MAX_OPTIONS:
        raise PlanError(f"{len(options)} count combinations exceed the limit of {MAX_OPTIONS}; "
                        "narrow the elastic stages' parallelism bounds")
    seen: set[tuple[int, ...]] = set()
    for option in options:
        counts = counts_of(app, option)
        for (name, bounds), n in zip(elastic.items(), counts):
            if not bounds.min <= n <= bounds.max:
                raise PlanError(f"count option gives stage {name!r} {n} instances, outside its parallelism "
                                f"[{bounds.min}, {bounds.max}]")
        if counts in seen:
            raise PlanError(f"count option {dict(zip(elastic, counts))} is given twice")
        seen.add(counts)


def make_elastic_plan(app: App, options: Sequence[AppPrediction], cluster: ClusterSpec, *,
                      objective: str = "latency", strategy: str = "sonic", budget: float | None = None,
                      deadline: float | None = None, warm: WarmSpec = None) -> tuple[Plan, AppPrediction]:
    """The best plan over every count option (module doc), and the option it was made for.

    Raises :class:`InfeasibleError` when no option has a plan meeting the request.
    """
    check_request(objective, strategy, budget, deadline)
    app.validate()
    check_options(app, options)
    elastic = app.elastic_stages()
    solved: dict[tuple[int, ...], _Solved] = {}
    by_counts: dict[tuple[int, ...], AppPrediction] = {}
    first_error: InfeasibleError | None = None
    for option in options:
        counts = counts_of(app, option)
        by_counts[counts] = option
        try:
            problem = build_problem(app, option, cluster, warm)
            space = PlacementSpace(problem.vms)
            model = CostModel(problem, space)
            best, _ = optimise(problem, space, model, objective=objective, strategy=strategy, budget=budget,
                               deadline=deadline)
        except InfeasibleError as exc:
            first_error = first_error or exc
            continue
        solved[counts] = _Solved(counts, best, problem, space, model)
    if not solved:
        assert first_error is not None
        raise InfeasibleError(f"no instance count of {', '.join(elastic)} gives a plan: {first_error}")
    # The same selection as within one option; on a tie the option given first wins.
    order = {c: i for i, c in enumerate(by_counts)}
    ranked = sorted(solved.values(), key=lambda s: order[s.counts])
    best_candidate = select([s.candidate for s in ranked], objective, budget, deadline)
    winner = next(s for s in ranked if s.candidate is best_candidate)
    plan = assemble_plan(winner.problem, winner.space, winner.model, winner.candidate.assignment,
                         objective=objective, strategy=strategy, warm_given=warm is not None)
    for i, (name, bounds) in enumerate(elastic.items()):
        neighbours = sorted(c for c in by_counts if c[:i] + c[i + 1:] == winner.counts[:i] + winner.counts[i + 1:])
        alternatives = []
        for counts in neighbours:
            if counts == winner.counts:
                continue
            found = solved.get(counts)
            alternatives.append(CountOption(counts[i], found.candidate.latency_s if found else None,
                                            found.candidate.cost_usd if found else None))
        plan.stages[name].parallelism = ParallelismChoice(bounds.min, bounds.max, winner.counts[i], alternatives)
    return plan, by_counts[winner.counts]
