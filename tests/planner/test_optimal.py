"""The optimiser returns the optimum of the cost model: DP == brute force on random small DAGs.

Every random case (<= 5 stages with branches and joins, <= 3 VMs, random patterns, predictions,
calibration, warm workers, objective, strategy and constraints) is solved by the DP
(:func:`make_plan`) and by exhaustive search over the same space; their objective values must
agree, and both must agree on infeasibility.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from planner_cases import Case, cases

from sonic.errors import InfeasibleError
from sonic.planner import make_plan
from sonic.planner.bruteforce import TooManyPlans, best_of, score_all
from sonic.planner.cost import objective_value
from sonic.planner.optimise import Candidate

#: Keep every example small enough for the exhaustive search.
MAX_PLANS = 20_000


def _check(case: Case, scored: list[Candidate] | None, budget: float | None = None,
           deadline: float | None = None) -> None:
    """``scored is None``: the brute force found the request infeasible before scoring."""
    expected = None if scored is None else best_of(scored, objective=case.objective, budget=budget, deadline=deadline)
    try:
        plan = make_plan(case.app, case.prediction, case.cluster, objective=case.objective,
                         strategy=case.strategy, warm=case.warm, budget=budget, deadline=deadline)
    except InfeasibleError:
        assert expected is None, case.describe()
        event("infeasible")
        return
    assert expected is not None, case.describe()
    value = objective_value(case.objective, plan.predicted["latency_s"], plan.predicted["cost_usd"])
    assert value == pytest.approx(expected.value, rel=1e-9, abs=1e-15), case.describe()


def _score(case: Case) -> list[Candidate] | None:
    try:
        return score_all(case.app, case.prediction, case.cluster, strategy=case.strategy, warm=case.warm,
                         limit=MAX_PLANS)
    except InfeasibleError:
        return None


_CASES = {"case": cases(), "constraint": st.sampled_from([None, None, "budget", "deadline", "both"]),
          "factor": st.floats(0.7, 1.6)}
_HEALTH = [HealthCheck.too_slow, HealthCheck.filter_too_much]


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=_HEALTH)
@given(**_CASES)
def test_dp_matches_brute_force(case: Case, constraint: str | None, factor: float) -> None:
    """200 derandomized cases in the default suite; the slow variant below runs 2000."""
    _dp_matches_brute_force(case, constraint, factor)


@pytest.mark.slow
@settings(max_examples=2000, deadline=None, suppress_health_check=_HEALTH)
@given(**_CASES)
def test_dp_matches_brute_force_on_many_random_cases(case: Case, constraint: str | None, factor: float) -> None:
    _dp_matches_brute_force(case, constraint, factor)


def _dp_matches_brute_force(case: Case, constraint: str | None, factor: float) -> None:
    try:
        scored = _score(case)
    except TooManyPlans:
        assume(False)
        return
    joins = sum(1 for s in case.app.topological_order() if len(case.app.in_edges(s)) > 1)
    branches = sum(1 for s in case.app.topological_order() if len(case.app.out_edges(s)) > 1)
    size = len(scored or [])
    event(f"stages={len(case.prediction.stages)}")
    event(f"joins={min(joins, 1)} branches={min(branches, 1)}")
    event(f"plans>={10 ** len(str(size)) // 10 if size else 0}")
    event(f"constraint={constraint}")
    budget = deadline = None
    if constraint is not None and scored:
        # Constraints around the unconstrained optimum, so some bind and some are infeasible.
        free = best_of(scored, objective=case.objective)
        assert free is not None
        if constraint in ("budget", "both"):
            budget = free.cost_usd * factor
        if constraint in ("deadline", "both"):
            deadline = free.latency_s * (2.0 - factor)
    _check(case, scored, budget, deadline)


def test_join_keeps_finish_time_tradeoffs() -> None:
    """A diamond whose join needs both branches' finish times: the DP must keep, per frontier
    state, every label that is better on one branch. Found by search against a DP that compared
    only the newest frontier stage, which returned a plan 10% slower than the optimum."""
    from planner_samples import _noop, cluster, stage_prediction

    from sonic.app import App
    from sonic.cluster.spec import Calibration
    from sonic.prediction import AppPrediction

    app = App("diamond")
    app.add_stage(_noop, name="a")
    app.add_stage(_noop, name="b", after="a", pattern="scatter")
    app.add_stage(_noop, name="c", after="a", pattern="scatter")
    app.add_stage(_noop, name="d", after={"b": "gather", "c": "broadcast"})
    mb = 1_000_000
    pred = AppPrediction("diamond", 0, {
        "a": stage_prediction("a", 2, 0.0, 50, 50 * mb),
        "b": stage_prediction("b", 2, 0.0, 50, 50 * mb),
        "c": stage_prediction("c", 1, 0.0, 50, mb),
        "d": stage_prediction("d", 1, 0.0, 50, mb),
    })
    cal = Calibration(vm_bandwidth_Bps=500e6, s3_conn_Bps=20e6, s3_latency_s=0.03)
    case = Case(app, pred, cluster(3, cores=2, memory_mb=8192, price_per_hour=0.1, calibration=cal),
                None, "latency", "sonic")
    _check(case, _score(case))
