"""The scheduling state machine, driven by hand: no sockets, no processes."""

from __future__ import annotations

import pytest

import sonic
from sonic.plan import PassingMethod, fixed_plan
from sonic.routing import ObjectRef
from sonic.runtime.scheduler import (
    Dispatch,
    InstanceFailed,
    InstanceFinished,
    JobFailed,
    JobFinished,
    JobState,
    VMLost,
)


def make_app() -> sonic.App:
    app = sonic.App("chain")

    @app.stage()
    def split(ctx): ...

    @app.stage(after="split", pattern="scatter")
    def work(ctx): ...

    @app.stage(after="work", pattern="gather")
    def join(ctx): ...

    return app.validate()


INPUT = [ObjectRef("_input", 0, "in", 100, "c0")]


def finish(d: Dispatch, names: list[str], size: int = 10, uploaded: bool | None = None) -> InstanceFinished:
    outs = tuple((n, size, f"ck-{d.spec.stage}-{d.spec.index}-{n}") for n in names)
    return InstanceFinished(d.spec.stage, d.spec.index, d.vm, outs, d.upload if uploaded is None else uploaded)


def run_to_end(state: JobState, actions, fanout: int = 3):
    """Complete every dispatch in order; return all dispatches seen."""
    seen: list[Dispatch] = []
    pending = list(actions)
    while pending:
        action = pending.pop(0)
        if isinstance(action, JobFinished):
            return seen, True
        assert isinstance(action, Dispatch), action
        seen.append(action)
        names = [f"part-{i}" for i in range(fanout)] if action.spec.stage == "split" else ["out"]
        pending.extend(state.handle(finish(action, names)))
    return seen, state.finished


@pytest.mark.parametrize("method", list(PassingMethod))
def test_fixed_strategies_complete_and_route_by_method(method: PassingMethod) -> None:
    app = make_app()
    state = JobState(app, fixed_plan(app, method, ["vm0", "vm1"]), {"vm0": 2, "vm1": 2}, INPUT)
    seen, done = run_to_end(state, state.start())
    assert done
    assert [d.spec.stage for d in seen].count("work") == 3
    work = [d for d in seen if d.spec.stage == "work"]
    split = next(d for d in seen if d.spec.stage == "split")
    assert split.sources[0].method == "remote"  # the app input is staged in S3
    if method is PassingMethod.VM:
        assert all(d.vm == split.vm for d in work), "VM-Storage consumers run where the data is"
        assert all(s.method == "local" for d in work for s in d.sources)
    elif method is PassingMethod.DIRECT:
        assert {d.vm for d in work} == {"vm0", "vm1"}
        remote_ones = [s for d in work if d.vm != split.vm for s in d.sources]
        assert remote_ones and all(s.method == "direct" and s.vm == split.vm for s in remote_ones)
    else:
        assert split.upload
        assert all(s.method in ("remote", "local") for d in work for s in d.sources)
        assert any(s.method == "remote" for d in work for s in d.sources)


def test_slots_are_respected_and_queue_drains() -> None:
    app = make_app()
    state = JobState(app, fixed_plan(app, PassingMethod.VM, ["vm0"]), {"vm0": 2}, INPUT)
    (split,) = state.start()
    actions = state.handle(finish(split, [f"part-{i}" for i in range(5)]))
    assert len(actions) == 2, "only two slots on vm0"
    more = state.handle(finish(actions[0], ["out"]))
    assert len(more) == 1 and more[0].spec.index == 2


def test_zero_fanout_scatter_still_finishes() -> None:
    app = make_app()
    state = JobState(app, fixed_plan(app, PassingMethod.DIRECT, ["vm0"]), {"vm0": 1}, INPUT)
    (split,) = state.start()
    actions = state.handle(finish(split, []))
    assert len(actions) == 1 and actions[0].spec.stage == "join" and actions[0].spec.inputs == ()
    assert state.handle(finish(actions[0], ["out"])) == [JobFinished()]


def test_failed_instance_is_retried_elsewhere_then_fails_with_details() -> None:
    app = make_app()
    state = JobState(app, fixed_plan(app, PassingMethod.DIRECT, ["vm0", "vm1"]), {"vm0": 1, "vm1": 1}, INPUT,
                     max_attempts=2)
    (split,) = state.start()
    (retry,) = state.handle(InstanceFailed("split", 0, split.vm, "boom"))
    assert retry.vm != split.vm and retry.attempt == 2
    (failed,) = state.handle(InstanceFailed("split", 0, retry.vm, "boom again"))
    assert isinstance(failed, JobFailed)
    assert "stage 'split' instance 0" in failed.message and retry.vm in failed.message
    assert "boom again" in failed.message


def test_lost_vm_reruns_producer_whose_output_lived_only_there() -> None:
    app = make_app()
    plan = fixed_plan(app, PassingMethod.DIRECT, ["vm0", "vm1"])
    plan.stages["split"].placement = {"vm0": 1}
    state = JobState(app, plan, {"vm0": 2, "vm1": 2}, INPUT)
    (split,) = state.start()
    assert split.vm == "vm0"
    work = state.handle(finish(split, ["part-0", "part-1"]))
    on_vm1 = [d for d in work if d.vm == "vm1"]
    # vm0 dies while its work instance runs: the split output lived only there.
    actions = state.handle(VMLost("vm0", "killed"))
    reruns = [a for a in actions if isinstance(a, Dispatch)]
    assert any(a.spec.stage == "split" and a.vm == "vm1" for a in reruns), reruns
    pending = list(reruns)
    for d in on_vm1:
        pending.extend(state.handle(InstanceFailed(d.spec.stage, d.spec.index, "vm1", "fetch failed", "fetch")))
    finished = False
    guard = 0
    while pending and guard < 50:
        guard += 1
        action = pending.pop(0)
        if isinstance(action, JobFinished):
            finished = True
            break
        if isinstance(action, JobFailed):
            pytest.fail(action.message)
        if state.instances[action.spec.stage][action.spec.index].done:
            continue
        assert action.vm == "vm1"
        names = ["part-0", "part-1"] if action.spec.stage == "split" else ["out"]
        pending.extend(state.handle(finish(action, names)))
    assert finished


def test_every_vm_lost_fails_the_job() -> None:
    app = make_app()
    state = JobState(app, fixed_plan(app, PassingMethod.DIRECT, ["vm0"]), {"vm0": 1}, INPUT)
    state.start()
    (failed,) = state.handle(VMLost("vm0", "unreachable"))
    assert isinstance(failed, JobFailed) and "vm0" in failed.message


def test_placement_follows_plan_proportions() -> None:
    app = make_app()
    plan = fixed_plan(app, PassingMethod.DIRECT, ["vm0", "vm1"])
    plan.stages["work"].placement = {"vm0": 1, "vm1": 3}
    state = JobState(app, plan, {"vm0": 8, "vm1": 8}, INPUT)
    (split,) = state.start()
    work = state.handle(finish(split, [f"part-{i}" for i in range(8)]))
    assert sorted(d.vm for d in work).count("vm1") == 6


def test_a_replanner_sees_each_finished_stage_and_its_plan_reaches_stages_not_started() -> None:
    """Mid-job re-planning: after split, the replanner learns work's real fanout (4) before
    work is routed; the plan it returns changes split->work and work->join, and work's
    instances are dispatched by the new plan (remote: they upload for join)."""
    import dataclasses

    from sonic.runtime.scheduler import StageObservation

    app = make_app()
    plan = fixed_plan(app, PassingMethod.DIRECT, ["vm0", "vm1"])
    seen: list[StageObservation] = []

    def replanner(obs: StageObservation):  # type: ignore[no-untyped-def]
        seen.append(obs)
        if obs.stage != "split":
            return None
        edges = [dataclasses.replace(e, method=PassingMethod.REMOTE) for e in plan.edges]
        return dataclasses.replace(plan, edges=edges)

    state = JobState(app, plan, {"vm0": 2, "vm1": 2}, INPUT, replanner=replanner)
    dispatches, done = run_to_end(state, state.start(), fanout=4)
    assert done
    assert [o.stage for o in seen] == ["split", "work", "join"]
    assert seen[0].consumer_instances == {"work": 4} and seen[0].output_bytes == 40
    work = [d for d in dispatches if d.spec.stage == "work"]
    assert len(work) == 4 and all(d.upload for d in work)
    assert state.plan.edge("work", "join").method is PassingMethod.REMOTE
    # split had started (it was done) when the plan changed: its upload decision stood.
    assert not next(d for d in dispatches if d.spec.stage == "split").upload


@pytest.mark.parametrize("method", list(PassingMethod))
def test_a_scatter_producer_packs_for_remote_storage(method: PassingMethod) -> None:
    """split (all out-edges scatter) stores one packed object when its edge is Remote-Storage
    (M PUTs instead of M x R); work (a gather out-edge) never packs. Consumers get the
    partitions by range: their inputs carry the pack and offset the producer reported."""
    app = make_app()
    state = JobState(app, fixed_plan(app, method, ["vm0", "vm1"]), {"vm0": 2, "vm1": 2}, INPUT)
    (split,) = [a for a in state.start() if isinstance(a, Dispatch)]
    assert split.pack is (method is PassingMethod.REMOTE)
    names = ["part-0", "part-1"]
    ranges = {n: ("_packed", 10 * i) for i, n in enumerate(names)} if split.pack else {}
    outs = tuple((n, 10, f"ck-{n}") for n in names)
    work = [a for a in state.handle(InstanceFinished("split", 0, split.vm, outs, split.upload, {}, ranges))
            if isinstance(a, Dispatch)]
    assert len(work) == 2 and not any(d.pack for d in work)
    refs = sorted((s.ref for d in work for s in d.sources), key=lambda r: r.name)
    assert [(r.pack, r.offset, r.key, r.stored_key) for r in refs] == (
        [("_packed", 0, "split/0/part-0", "split/0/_packed"), ("_packed", 10, "split/0/part-1", "split/0/_packed")]
        if split.pack else [("", 0, "split/0/part-0", "split/0/part-0"), ("", 0, "split/0/part-1", "split/0/part-1")])
    assert not JobState(app, fixed_plan(app, method, ["vm0"]), {"vm0": 1}, INPUT, pack_outputs=False).start()[0].pack
