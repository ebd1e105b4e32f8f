"""Requests no plan can meet raise InfeasibleError with one line naming the best alternative."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from planner_samples import cluster, lightgbm, video

from sonic.errors import InfeasibleError, PlanError
from sonic.planner import make_plan
from sonic.prediction import Estimate


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_stage_that_fits_no_vm_names_the_stage_and_the_memory_needed() -> None:
    app, pred = lightgbm()
    stages = dict(pred.stages)
    stages["train"] = replace(stages["train"], memory_mb=Estimate(3000, 9000))   # hi is what counts
    with pytest.raises(InfeasibleError) as exc:
        make_plan(app, replace(pred, stages=stages), cluster(4, memory_mb=8192))
    message = _one_line(exc)
    assert "'train'" in message and "9000 MB" in message and "8192 MB" in message
    assert "at least 9000 MB" in message


def test_instances_that_cannot_all_fit_in_the_clusters_memory() -> None:
    app, pred = lightgbm(models=8)
    stages = dict(pred.stages)
    stages["train"] = replace(stages["train"], memory_mb=Estimate.exact(5000))   # one per 8 GB VM
    with pytest.raises(InfeasibleError) as exc:
        make_plan(app, replace(pred, stages=stages), cluster(4, memory_mb=8192))
    message = _one_line(exc)
    assert "'train'" in message and "8 instances" in message and "at most 4" in message


def test_budget_too_small_names_the_cheapest_plan() -> None:
    app, pred = video()
    spec = cluster(4)
    cheapest = make_plan(app, pred, spec, objective="cost")
    budget = cheapest.predicted["cost_usd"] * 0.5
    with pytest.raises(InfeasibleError) as exc:
        make_plan(app, pred, spec, budget=budget)
    message = _one_line(exc)
    assert "cheapest plan" in message and "--budget" in message
    quoted = float(re.search(r"raise --budget to at least \$([0-9.]+)", message).group(1))  # type: ignore[union-attr]
    assert cheapest.predicted["cost_usd"] <= quoted <= cheapest.predicted["cost_usd"] * 1.001


def test_deadline_too_short_names_the_fastest_plan() -> None:
    app, pred = video()
    spec = cluster(4)
    fastest = make_plan(app, pred, spec, objective="latency")
    with pytest.raises(InfeasibleError) as exc:
        make_plan(app, pred, spec, objective="cost", deadline=fastest.predicted["latency_s"] * 0.5)
    message = _one_line(exc)
    assert "fastest plan" in message and "--deadline" in message
    quoted = float(re.search(r"at least ([0-9.]+) s", message).group(1))  # type: ignore[union-attr]
    assert fastest.predicted["latency_s"] <= quoted <= fastest.predicted["latency_s"] * 1.001


def test_budget_and_deadline_together_name_what_each_allows() -> None:
    app, pred = video()
    spec = cluster(4)
    fastest = make_plan(app, pred, spec, objective="latency")
    cheapest = make_plan(app, pred, spec, objective="cost")
    with pytest.raises(InfeasibleError) as exc:
        make_plan(app, pred, spec, budget=cheapest.predicted["cost_usd"] * 1.01,
                  deadline=fastest.predicted["latency_s"] * 1.01)
    message = _one_line(exc)
    assert "fastest within budget" in message and "cheapest within deadline" in message


def test_binding_budget_is_met() -> None:
    app, pred = video()
    spec = cluster(4)
    fastest = make_plan(app, pred, spec, objective="latency")
    cheapest = make_plan(app, pred, spec, objective="cost")
    budget = (fastest.predicted["cost_usd"] + cheapest.predicted["cost_usd"]) / 2
    plan = make_plan(app, pred, spec, objective="latency", budget=budget)
    assert plan.predicted["cost_usd"] <= budget
    assert fastest.predicted["latency_s"] <= plan.predicted["latency_s"] <= cheapest.predicted["latency_s"]


def test_vm_strategy_needs_one_vm_that_holds_every_stage() -> None:
    app, pred = lightgbm()
    stages = dict(pred.stages)
    stages["train"] = replace(stages["train"], memory_mb=Estimate.exact(5000))   # 2 cores x 5 GB > 8 GB
    with pytest.raises(InfeasibleError) as exc:
        make_plan(app, replace(pred, stages=stages), cluster(8, memory_mb=8192), strategy="vm")
    message = _one_line(exc)
    assert "strategy vm" in message and "'train'" in message and "--strategy sonic" in message


@pytest.mark.parametrize("kwargs, needle", [
    ({"objective": "fast"}, "objective"),
    ({"strategy": "magic"}, "strategy"),
    ({"budget": 0.0}, "budget"),
    ({"deadline": -1.0}, "deadline"),
])
def test_malformed_requests_are_plan_errors(kwargs: dict[str, object], needle: str) -> None:
    app, pred = video()
    with pytest.raises(PlanError, match=needle):
        make_plan(app, pred, cluster(2), **kwargs)  # type: ignore[arg-type]
