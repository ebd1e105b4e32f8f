"""All three workloads, on loopback / ssh / netns clusters, with each fixed strategy and a
mixed hand-written plan: validated output every time (DESIGN.md section 9)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sonic.app import load_app
from sonic.cluster.spec import ClusterSpec
from sonic.plan import PassingMethod, Plan, fixed_plan
from sonic.runtime.coordinator import Coordinator

WORKLOADS = ["sort", "video", "lightgbm"]


def mixed_plan(app_name: str, vms: list[str]) -> Plan:
    """A hand-written plan using every method somewhere and a skewed placement."""
    app = load_app(app_name)
    plan = fixed_plan(app, PassingMethod.DIRECT, vms)
    methods = [PassingMethod.VM, PassingMethod.REMOTE, PassingMethod.DIRECT]
    for edge, method in zip(plan.edges, methods):
        edge.method = method
    first = app.topological_order()[0]
    plan.stages[first].placement = {vms[-1]: 1}
    plan.strategy = "mixed"
    return plan


@pytest.mark.parametrize("strategy", ["remote", "vm", "direct", "mixed"])
@pytest.mark.parametrize("app_name", WORKLOADS)
def test_workload_runs_with_validated_output(app_name: str, strategy: str, cluster: ClusterSpec,
                                             coordinator: Coordinator, workload_inputs: dict[str, Path]) -> None:
    app = load_app(app_name)
    if strategy == "mixed":
        plan = mixed_plan(app_name, cluster.vm_names)
    else:
        plan = fixed_plan(app, PassingMethod(strategy), cluster.vm_names)
        if strategy == "vm":
            for stage in plan.stages.values():
                stage.placement = {cluster.vm_names[0]: 1}   # SAND-style: everything on one VM
    result = coordinator.execute(app, app_name, workload_inputs[app_name], plan)
    assert result.output_ok, result.output_detail
    assert [e.method for e in result.edges] == [e.method.value for e in plan.edges]
    assert all(s.instances >= 1 for s in result.stages)
    used = {m.vm for m in result.instances}
    if strategy == "vm":
        assert used == {cluster.vm_names[0]}
    elif max(s.instances for s in result.stages) >= 2:
        assert len(used) >= 2, "instances should spread over the cluster"
    moved = {(e.src, e.dst): e for e in result.edges}
    for edge in plan.edges:
        assert moved[(edge.src, edge.dst)].bytes > 0
