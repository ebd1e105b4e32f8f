"""Planner side of the passing methods: each method's cost terms, one hook object per method
in an explicit registry keyed by method name (see ``sonic.passing`` and docs/architecture.md,
"Passing methods"). Pure, like the rest of the planner."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sonic.passing import MethodRegistry
from sonic.plan import PassingMethod
from sonic.planner.cost import CostModel
from sonic.planner.placement import Placement
from sonic.planner.problem import EdgeInfo


class PlannerMethod(Protocol):
    """What the planner needs to know about one method."""

    @property
    def needs_upload(self) -> bool:
        """The producer must upload its outputs for a consumer to fetch by this method."""
        ...

    def fetch_seconds(self, model: CostModel, edge: EdgeInfo, pp: Placement, pc: Placement) -> tuple[float, ...]:
        """Seconds each VM of ``pc`` spends fetching ``edge``'s input."""
        ...

    def download_dollars(self, model: CostModel, edge: EdgeInfo, pp: Placement, pc: Placement) -> float:
        """Dollars of the consumers' fetch of ``edge`` (requests, transfer)."""
        ...


@dataclass(frozen=True)
class BuiltinPlannerMethod:
    """A built-in method: its terms are the cost model's (``CostModel.fetch``,
    ``CostModel.download_dollars``), which the brute-force tests pin."""

    method: PassingMethod
    needs_upload: bool

    def fetch_seconds(self, model: CostModel, edge: EdgeInfo, pp: Placement, pc: Placement) -> tuple[float, ...]:
        return model.fetch(edge, self.method, pp, pc)

    def download_dollars(self, model: CostModel, edge: EdgeInfo, pp: Placement, pc: Placement) -> float:
        return model.download_dollars(edge, self.method, pp, pc)


PLANNER_METHODS: MethodRegistry[PlannerMethod] = MethodRegistry("planner")
PLANNER_METHODS.register(PassingMethod.VM, BuiltinPlannerMethod(PassingMethod.VM, needs_upload=False))
PLANNER_METHODS.register(PassingMethod.DIRECT, BuiltinPlannerMethod(PassingMethod.DIRECT, needs_upload=False))
PLANNER_METHODS.register(PassingMethod.REMOTE, BuiltinPlannerMethod(PassingMethod.REMOTE, needs_upload=True))
