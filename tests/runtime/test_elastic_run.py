"""A plan's chosen instance counts reach the producers on a real loopback cluster: sort runs
with the counts the plan chose for map and reduce (not its ceil(size / 4 MB) default) and its
output validates."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sonic.app import load_app
from sonic.cluster.spec import ClusterSpec
from sonic.emulation.local import HarnessOptions, local_cluster
from sonic.inputs import generate_input
from sonic.plan import ParallelismChoice, PassingMethod, Plan, fixed_plan
from sonic.runtime.coordinator import Coordinator
from sonic.runtime.protocol import read_secret

SIZE = 6_000_000  # the default would be M = R = 2


@pytest.fixture(scope="module")
def loopback(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ClusterSpec, Coordinator]]:
    root = tmp_path_factory.mktemp("elastic-cluster")
    with local_cluster(2, "loopback", root, options=HarnessOptions(ssh_config_path=None)) as spec:
        assert spec.secret_file
        coord = Coordinator(spec, read_secret(spec.secret_file))
        try:
            yield spec, coord
        finally:
            coord.close()


def chosen_plan(vms: list[str], method: PassingMethod, maps: int, reduces: int) -> Plan:
    plan = fixed_plan(load_app("sort"), method, vms)
    for stage, n in (("map", maps), ("reduce", reduces)):
        plan.stages[stage].instances = n
        plan.stages[stage].placement = {vms[0]: n - n // 2, vms[1]: n // 2} if n > 1 else {vms[0]: 1}
        plan.stages[stage].parallelism = ParallelismChoice(1, 256, n)
    # Through JSON, as `sonic run --plan FILE` would read it.
    return Plan.from_json(plan.to_json())


@pytest.mark.parametrize("method, maps, reduces", [(PassingMethod.DIRECT, 5, 3), (PassingMethod.REMOTE, 1, 4)])
def test_sort_runs_with_the_plans_counts(loopback: tuple[ClusterSpec, Coordinator], tmp_path: Path,
                                         method: PassingMethod, maps: int, reduces: int) -> None:
    spec, coord = loopback
    app = load_app("sort")
    data = generate_input(app, tmp_path / "sort.in", SIZE, seed=3)
    result = coord.execute(app, "sort", data, chosen_plan(spec.vm_names, method, maps, reduces))
    assert result.output_ok, result.output_detail
    counts = {s.name: s.instances for s in result.stages}
    assert counts == {"split": 1, "map": maps, "reduce": reduces}
    map_outputs = sum(i.n_outputs for i in result.instances if i.stage == "map")
    assert map_outputs == maps * reduces


def test_without_a_chosen_count_sort_keeps_its_default(loopback: tuple[ClusterSpec, Coordinator],
                                                       tmp_path: Path) -> None:
    spec, coord = loopback
    app = load_app("sort")
    data = generate_input(app, tmp_path / "sort.in", SIZE, seed=4)
    result = coord.execute(app, "sort", data, fixed_plan(app, PassingMethod.DIRECT, spec.vm_names))
    assert result.output_ok, result.output_detail
    assert {s.name: s.instances for s in result.stages} == {"split": 1, "map": 2, "reduce": 2}


def test_scheduler_passes_the_chosen_count_and_a_replan_keeps_it() -> None:
    """The producer of an elastic stage is dispatched with the plan's count; a mid-job re-plan
    whose plan has no parallelism (same count) keeps the chosen count for stages not started."""
    import dataclasses

    from sonic.routing import ObjectRef
    from sonic.runtime.scheduler import Dispatch, InstanceFinished, JobFinished, JobState

    app = load_app("sort")
    plan = chosen_plan(["vm0", "vm1"], PassingMethod.DIRECT, 3, 2)
    bare = dataclasses.replace(plan, stages={s: dataclasses.replace(p, parallelism=None)
                                             for s, p in plan.stages.items()})
    state = JobState(app, plan, {"vm0": 2, "vm1": 2}, [ObjectRef("_input", 0, "in", 100, "c")],
                     replanner=lambda obs: bare if obs.stage == "split" else None)
    pending, seen = list(state.start()), []
    while pending:
        action = pending.pop(0)
        if isinstance(action, JobFinished):
            break
        assert isinstance(action, Dispatch)
        seen.append(action)
        stage = action.spec.stage
        names = ([f"chunk-{i}" for i in range(3)] if stage == "split"
                 else [f"part-{i}" for i in range(2)] if stage == "map" else ["sorted"])
        outs = tuple((n, 10, f"ck-{stage}-{action.spec.index}-{n}") for n in names)
        pending.extend(state.handle(InstanceFinished(stage, action.spec.index, action.vm, outs, action.upload)))
    assert state.finished
    by_stage = {d.spec.stage: dict(d.spec.partitions) for d in seen}
    assert by_stage == {"split": {"map": 3}, "map": {"reduce": 2}, "reduce": {}}
