"""The search space of one planning request: allowed methods per edge, placements per stage.

Shared by the optimiser and the brute-force enumerator, so both search exactly the same set
of plans. A strategy narrows it: ``remote`` / ``direct`` / ``vm`` fix the method on every edge
(``vm`` also keeps every stage on one VM, SAND-style); ``sonic`` / ``oracle`` allow every
method registered with the planner (``sonic.planner.methods.planner_methods``: the three
built-ins, then any extra one), except that stages with untrusted predictions get
Remote-Storage on all their edges.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sonic.errors import InfeasibleError, PlanError
from sonic.passing import PassingMethod, PlanMethod
from sonic.plan import STRATEGIES
from sonic.planner.cost import CostModel
from sonic.planner.methods import needs_upload, planner_methods
from sonic.planner.placement import Placement, PlacementSpace
from sonic.planner.problem import Problem


@dataclass(frozen=True)
class SearchSpace:
    methods: Mapping[int, tuple[PlanMethod, ...]]       # edge index -> allowed methods
    placements: Mapping[str, tuple[Placement, ...]]     # stage -> free placements (no in-place in-edge)
    upload_options: Mapping[str, tuple[bool, ...]]      # stage -> upload its outputs?
    only_vm: int | None = None                          # vm strategy: the single VM used


def allowed_methods(problem: Problem, strategy: str) -> dict[int, tuple[PlanMethod, ...]]:
    if strategy not in STRATEGIES:
        raise PlanError(f"strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    registered = planner_methods()
    methods: dict[int, tuple[PlanMethod, ...]] = {}
    for e in problem.edges:
        if strategy in ("remote", "direct", "vm"):
            methods[e.index] = (PassingMethod(strategy),)
        elif not (problem.stages[e.src].trusted and problem.stages[e.dst].trusted):
            # Sonic falls back to Remote-Storage until the models are trustworthy: it needs no
            # placement decision that a wrong size or fanout could make disastrous.
            methods[e.index] = (PassingMethod.REMOTE,)
        else:
            methods[e.index] = registered
    return methods


def build_space(problem: Problem, space: PlacementSpace, model: CostModel, strategy: str,
                *, only_vm: int | None = None) -> SearchSpace:
    """The plans the optimiser may choose from. ``only_vm`` restricts every stage to one VM."""
    methods = allowed_methods(problem, strategy)
    placements: dict[str, tuple[Placement, ...]] = {}
    for name in problem.order:
        s = problem.stages[name]
        if only_vm is not None:
            candidates = [space.single(only_vm, s.instances)]
        else:
            candidates = space.canonical(s.instances)
        feasible = tuple(p for p in candidates if model.fits(name, p))
        if not feasible and only_vm is None:
            capacity = sum(_capacity(problem, name, v) for v in range(len(problem.vms)))
            raise InfeasibleError(
                f"stage {name!r} has {s.instances} instances of {s.memory_mb:.0f} MB but the cluster's memory "
                f"holds at most {min(capacity, s.instances - 1)} of them; add VMs or memory, or plan a smaller input")
        placements[name] = feasible
    uploads: dict[str, tuple[bool, ...]] = {}
    for name in problem.order:
        # Per out-edge: does each allowed method need the producer's upload?
        outs = [[needs_upload(m) for m in methods[e.index]] for e in problem.out_edges[name]]
        if any(all(needs) for needs in outs):
            uploads[name] = (True,)           # an edge that can only be fetched from an upload
        elif any(any(needs) for needs in outs):
            uploads[name] = (False, True)
        else:
            uploads[name] = (False,)
    return SearchSpace(methods, placements, uploads, only_vm)


def strategy_spaces(problem: Problem, space: PlacementSpace, model: CostModel, strategy: str) -> list[SearchSpace]:
    """The search space(s) of a strategy: one, or for ``vm`` one per VM type that holds every stage."""
    if strategy != "vm":
        return [build_space(problem, space, model, strategy)]
    found: list[SearchSpace] = []
    for group in space.groups:
        vm = space.first_vm(group.index)
        ss = build_space(problem, space, model, strategy, only_vm=vm)
        if all(ss.placements[name] for name in problem.order):
            found.append(ss)
    if not found:
        misfits = []
        for group in space.groups:
            vm = space.first_vm(group.index)
            name = next(n for n in problem.order
                        if not model.fits(n, space.single(vm, problem.stages[n].instances)))
            misfits.append(f"{name!r} does not fit on {problem.vms[vm].name}")
        raise InfeasibleError(
            "strategy vm puts every stage on one VM, but no VM holds them all (" + "; ".join(misfits)
            + "); use --strategy sonic, which spreads stages over several VMs")
    return found


def _capacity(problem: Problem, stage: str, vm: int) -> int:
    info = problem.vms[vm]
    mem = problem.stages[stage].memory_mb
    if mem <= 0:
        return problem.stages[stage].instances
    per_vm = int(info.memory_mb // mem)
    # A VM whose cores all fit in memory runs any number (they queue); else at most per_vm.
    return problem.stages[stage].instances if per_vm >= info.cores else per_vm
