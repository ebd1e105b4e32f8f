"""Quick feasible plans that seed the optimiser's bound (branch and bound, still exact).

Rule-of-thumb plans from the search space, scored by the cost model: *packed* (every stage
on as few VMs as possible, preferring VM-Storage) and *spread to K VMs* for K = 2, 3, 4, 5, 6, 8, 10, ...
(every stage on up to K VMs, preferring Direct-Passing; K grows by ~25%); extra registered
methods come after the built-ins in both. The best one for the objective is an
upper bound: the DP drops partial plans whose lower bound is already worse. Any may be
missing when the rules do not produce a valid plan; that only weakens the bound.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from sonic.errors import PlanError
from sonic.passing import PassingMethod, PlanMethod
from sonic.planner.cost import Assignment, CostModel, Evaluation
from sonic.planner.methods import in_place
from sonic.planner.placement import Placement, PlacementSpace
from sonic.planner.problem import Problem
from sonic.planner.space import SearchSpace

_PACKED = (PassingMethod.VM, PassingMethod.DIRECT, PassingMethod.REMOTE)
_SPREAD = (PassingMethod.DIRECT, PassingMethod.REMOTE, PassingMethod.VM)


def rule_of_thumb_plans(problem: Problem, space: PlacementSpace, model: CostModel,
                        ss: SearchSpace) -> list[tuple[Assignment, Evaluation]]:
    styles: list[tuple[Sequence[PlanMethod], int]] = [(_PACKED, 1)]
    width = 2
    while width <= len(problem.vms):
        styles.append((_SPREAD, width))
        width = max(width + 1, round(width * 1.25))   # 2, 3, 4, 5, 6, 8, 10, 12, 15, ...
    if len(problem.vms) > 1 and styles[-1][1] != len(problem.vms):
        styles.append((_SPREAD, len(problem.vms)))
    found: list[tuple[Assignment, Evaluation]] = []
    for preference, width in styles:
        assignment = _build(problem, space, model, ss, preference, width)
        if assignment is None:
            continue
        try:
            found.append((assignment, model.evaluate(assignment)))
        except PlanError:
            continue  # the rules broke a model rule: no seed from this style
    return found


def _build(problem: Problem, space: PlacementSpace, model: CostModel, ss: SearchSpace,
           preference: Sequence[PlanMethod], width: int) -> Assignment | None:
    """Stage by stage: the first allowed methods in ``preference`` order that give a valid
    placement; free stages on the widest placement using at most ``width`` VMs."""
    placements: dict[str, Placement] = {}
    methods: dict[tuple[str, str], PlanMethod] = {}
    # Built-ins in the style's order, then extra methods in the order allowed (a stable sort).
    rank = {m: i for i, m in enumerate(preference)}
    for name in problem.order:
        ins = problem.in_edges[name]
        n = problem.stages[name].instances
        options = [sorted(ss.methods[e.index], key=lambda m: rank.get(m, len(rank))) for e in ins]
        chosen: tuple[tuple[PlanMethod, ...], Placement] | None = None
        for combo in itertools.product(*options):
            pinned = {space.follow(e.pattern, placements[e.src], n) for e, m in zip(ins, combo)
                      if in_place(m)}
            if None in pinned or len(pinned) > 1:
                continue
            if pinned:
                p = next(iter(pinned))
                if p is None or not model.fits(name, p):
                    continue
            else:
                free = ss.placements[name]
                if not free:
                    return None
                narrow = [q for q in free if len(q.vms) <= width] or [min(free, key=lambda q: len(q.vms))]
                p = max(narrow, key=lambda q: (len(q.vms), -q.id))
            chosen = (combo, p)
            break
        if chosen is None:
            return None
        for e, m in zip(ins, chosen[0]):
            methods[(e.src, e.dst)] = m
        placements[name] = chosen[1]
    return Assignment(placements, methods)
