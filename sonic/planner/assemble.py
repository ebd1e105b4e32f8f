"""Turn the optimiser's chosen assignment into a :class:`sonic.plan.Plan` (JSON keys fixed).

Besides the choice, every edge reports ``predicted_s`` for every method registered with the
planner (the three built-ins, then any extra one, by plan name): the seconds from its
producer's end until its consumer stage ends if that edge used the method, with the rest of
the plan as chosen and the consumer placed as the method requires (on the producer's VMs for
an in-place method, ``vm``; as planned, or at its best placement, for the others). For a
method that needs the producer's upload (``remote``) it includes the upload. Where VM-Storage
cannot keep a consumer next to all of its input (a shuffle whose producer spans several VMs),
``vm`` shows what the runtime would do: consumers on the VM holding most of the input,
pulling the rest directly.
"""

from __future__ import annotations

import math

from sonic.passing import PassingMethod, PlanMethod
from sonic.plan import EdgePlan, Plan, StagePlan
from sonic.planner.cost import Assignment, CostModel, Evaluation, Input
from sonic.planner.methods import in_place, needs_upload, planner_methods
from sonic.planner.placement import Placement, PlacementSpace
from sonic.planner.problem import EdgeInfo, Problem

#: How the runtime fetches an input of an in-place method whose consumer is not next to it:
#: a pull from the producer's agent (``BuiltinRuntimeMethod.choose_source``). A fact of the
#: runtime's built-in source selection, not a cost term of a method, so it stays named here.
_NOT_IN_PLACE = PassingMethod.DIRECT


def assemble_plan(problem: Problem, space: PlacementSpace, model: CostModel, assignment: Assignment, *,
                  objective: str, strategy: str, warm_given: bool) -> Plan:
    evaluation = model.evaluate(assignment)
    names = [vm.name for vm in problem.vms]
    stages = {
        name: StagePlan(problem.stages[name].instances,
                        {names[v]: c for v, c in assignment.placements[name].items},
                        problem.stages[name].memory_mb)
        for name in problem.order
    }
    edges = [
        EdgePlan(e.src, e.dst, e.pattern.value, assignment.methods[(e.src, e.dst)],
                 edge_predictions(problem, space, model, assignment, evaluation, e))
        for e in problem.edges
    ]
    return Plan(problem.app, problem.input_bytes, objective, strategy, stages, edges,
                {"latency_s": evaluation.latency_s, "cost_usd": evaluation.cost_usd},
                _notes(problem, space, evaluation, strategy, warm_given))


def edge_predictions(problem: Problem, space: PlacementSpace, model: CostModel, assignment: Assignment,
                     evaluation: Evaluation, edge: EdgeInfo) -> dict[str, float]:
    """``predicted_s`` of one edge for each method (see the module docstring)."""
    src, dst = edge.src, edge.dst
    pp = assignment.placements[src]
    planned_pc = assignment.placements[dst]
    planned = assignment.methods[(src, dst)]
    n = problem.stages[dst].instances
    upload = evaluation.uploads[dst]
    others = [(e, assignment.methods[(e.src, e.dst)], assignment.placements[e.src])
              for e in problem.in_edges[dst] if e.index != edge.index]
    pinned = next((space.follow(e.pattern, p, n) for e, m, p in others if in_place(m)), None)
    src_inputs = [(e, assignment.methods[(e.src, e.dst)], assignment.placements[e.src])
                  for e in problem.in_edges[src]]
    upload_extra = (model.stage_time(src, pp, src_inputs, True) - model.stage_time(src, pp, src_inputs, False))
    result: dict[str, float] = {}
    for method in planner_methods():
        fetch_as: PlanMethod = method
        if method == planned:
            candidates = [planned_pc]
        elif in_place(method):
            follow = space.follow(edge.pattern, pp, n)
            if follow is None:
                biggest = max(pp.items, key=lambda item: (item[1], -item[0]))[0]
                follow, fetch_as = space.single(biggest, n), _NOT_IN_PLACE
            candidates = [follow]
        elif pinned is not None:
            candidates = [pinned]
        else:
            candidates = space.canonical(n)
        best = math.inf
        for pc in candidates:
            if not model.fits(dst, pc):
                continue
            inputs = [(edge, fetch_as, pp)] + [_as_placed(space, e, m, p, pc) for e, m, p in others]
            best = min(best, model.stage_time(dst, pc, inputs, upload))
        if math.isfinite(best):
            result[method.value] = best + (upload_extra if needs_upload(method) else 0.0)
    return result


def _as_placed(space: PlacementSpace, e: EdgeInfo, m: PlanMethod, pp: Placement, pc: Placement) -> Input:
    """An in-place (VM-Storage) input whose consumer is not next to it is pulled directly (runtime fallback)."""
    if in_place(m) and space.follow(e.pattern, pp, pc.instances) is not pc:
        return (e, _NOT_IN_PLACE, pp)
    return (e, m, pp)


def _notes(problem: Problem, space: PlacementSpace, evaluation: Evaluation, strategy: str,
           warm_given: bool) -> list[str]:
    notes = list(problem.notes)
    untrusted = [s for s in problem.order if not problem.stages[s].trusted]
    if untrusted and strategy in ("sonic", "oracle"):
        why = ", ".join(f"{s} ({problem.stages[s].untrusted_reason or 'no models'})" for s in untrusted)
        notes.append(f"predictions are not trusted yet for {why}: "
                     "their edges use Remote-Storage until the models are trustworthy")
    if evaluation.cold_vms:
        who = ", ".join(evaluation.cold_vms)
        why = "no VM is assumed warm (warm= not given)" if not warm_given else f"{who} need more workers than are warm"
        notes.append(f"{why}: {who} each pay one cold start ({problem.calibration.cold_start_s:.3f} s, "
                     "in parallel at job start)")
    if not space.mixed:
        notes.append("the cluster has too many VM types to mix them freely within a stage: a stage uses one type, "
                     "or the first VMs in the order warm, then cheapest per core")
    if strategy == "vm":
        notes.append(f"SAND-style baseline: every stage on {evaluation.vms_used[0]}")
    return notes
