"""Fault rules of the scheduling state machine, driven by hand (no sockets, no processes):
lineage across several stages, bad inputs regenerated, who gets blamed, no silent hangs."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

import sonic
from sonic.plan import PassingMethod, fixed_plan
from sonic.routing import ObjectRef
from sonic.runtime.scheduler import (
    Action,
    Dispatch,
    InstanceFailed,
    InstanceFinished,
    JobFailed,
    JobFinished,
    JobState,
    VMLost,
)

INPUT = [ObjectRef("_input", 0, "in", 100, "c0")]
VMS = {"vm0": 4, "vm1": 4, "vm2": 4}


def chain_app() -> sonic.App:
    """split -scatter-> work -one-to-one-> post -gather-> join: three hops of lineage."""
    app = sonic.App("chain3")

    @app.stage()
    def split(ctx): ...

    @app.stage(after="split", pattern="scatter")
    def work(ctx): ...

    @app.stage(after="work", pattern="one-to-one")
    def post(ctx): ...

    @app.stage(after="post", pattern="gather")
    def join(ctx): ...

    return app.validate()


def outputs_for(d: Dispatch, fanout: int = 3, salt: str = "") -> tuple[tuple[str, int, str], ...]:
    names = [f"part-{i}" for i in range(fanout)] if d.spec.stage == "split" else ["out"]
    return tuple((n, 10, f"ck-{d.spec.stage}-{d.spec.index}-{n}{salt}") for n in names)


def finish(d: Dispatch, salt: str = "") -> InstanceFinished:
    return InstanceFinished(d.spec.stage, d.spec.index, d.vm, outputs_for(d, salt=salt), d.upload)


def dispatches(actions: Iterable[Action]) -> list[Dispatch]:
    return [a for a in actions if isinstance(a, Dispatch)]


def drain(state: JobState, pending: list[Action], *, guard: int = 200) -> list[Dispatch]:
    """Finish every dispatch (in order) until the job ends; return what was dispatched."""
    seen: list[Dispatch] = []
    while pending and guard:
        guard -= 1
        action = pending.pop(0)
        if isinstance(action, JobFinished):
            return seen
        if isinstance(action, JobFailed):
            pytest.fail(action.message)
        assert isinstance(action, Dispatch)
        seen.append(action)
        pending.extend(state.handle(finish(action)))
    assert state.finished, "job did not finish"
    return seen


def run_until(state: JobState, stage: str) -> tuple[list[Action], list[Dispatch]]:
    """Finish dispatches until ``stage`` has been dispatched; return (pending, finished so far)."""
    pending: list[Action] = list(state.start())
    done: list[Dispatch] = []
    while True:
        if any(isinstance(a, Dispatch) and a.spec.stage == stage for a in pending):
            return pending, done
        action = pending.pop(0)
        assert isinstance(action, Dispatch), action
        done.append(action)
        pending.extend(state.handle(finish(action)))


def test_losing_a_vm_regenerates_two_stages_of_lineage() -> None:
    """work and post outputs both lived only on vm0: when vm0 dies while join waits, split
    (whose chunks were on vm0 too) must be re-run as well, up the chain, and the job finishes."""
    app = chain_app()
    plan = fixed_plan(app, PassingMethod.VM, list(VMS))
    for stage in plan.stages.values():
        stage.placement = {"vm0": 1}
    state = JobState(app, plan, VMS, INPUT)
    pending, done = run_until(state, "join")
    (join,) = dispatches(pending)
    assert join.vm == "vm0"
    actions = state.handle(VMLost("vm0", "killed"))
    rerun = dispatches(actions)
    # The join cannot run anywhere until its inputs exist again; what runs first is split.
    assert [d.spec.stage for d in rerun] == ["split"] and rerun[0].vm != "vm0"
    seen = drain(state, actions)
    stages = [d.spec.stage for d in seen]
    assert stages.count("work") == 3 and stages.count("post") == 3 and stages.count("join") == 1
    assert all(d.vm != "vm0" for d in seen)


def test_corrupt_input_regenerates_its_producer_on_another_vm() -> None:
    app = chain_app()
    state = JobState(app, fixed_plan(app, PassingMethod.DIRECT, list(VMS)), VMS, INPUT)
    pending, done = run_until(state, "work")
    split = done[0]
    work = dispatches(pending)
    victim = work[0]
    bad_key = victim.sources[0].ref.key
    actions = state.handle(InstanceFailed("work", victim.spec.index, victim.vm, "checksum mismatch", "fetch",
                                          "corrupt", bad_key, split.vm))
    rerun = dispatches(actions)
    assert [(d.spec.stage, d.spec.index) for d in rerun] == [("split", 0)]
    assert rerun[0].vm != split.vm, "a re-run must not rewrite files consumers may be reading in place"
    # Until split is done again nobody consumes its outputs; then work 0 runs with the new copy.
    after = state.handle(finish(rerun[0], salt="-v2"))
    retried = [d for d in dispatches(after) if d.spec.stage == "work" and d.spec.index == victim.spec.index]
    assert retried and retried[0].sources[0].ref.checksum.endswith("-v2")
    assert retried[0].attempt == 2
    assert state.instances["work"][victim.spec.index].failures == 1


def test_unreachable_lost_source_is_not_held_against_the_consumer() -> None:
    app = chain_app()
    plan = fixed_plan(app, PassingMethod.DIRECT, list(VMS))
    plan.stages["split"].placement = {"vm0": 1}
    state = JobState(app, plan, VMS, INPUT, max_attempts=1)
    pending, done = run_until(state, "work")
    consumer = next(d for d in dispatches(pending) if d.vm != "vm0")
    state.handle(VMLost("vm0", "no heartbeat"))
    actions = state.handle(InstanceFailed("work", consumer.spec.index, consumer.vm, "connection refused", "fetch",
                                          "unreachable", consumer.sources[0].ref.key, "vm0"))
    assert not any(isinstance(a, JobFailed) for a in actions), "max_attempts=1 and yet not failed: not counted"
    assert state.instances["work"][consumer.spec.index].failures == 0


def test_late_reports_from_a_lost_vm_are_ignored() -> None:
    app = chain_app()
    state = JobState(app, fixed_plan(app, PassingMethod.DIRECT, list(VMS)), VMS, INPUT)
    pending, done = run_until(state, "work")
    on_vm1 = next(d for d in dispatches(pending) if d.vm == "vm1")
    state.handle(VMLost("vm1", "hung"))
    assert state.handle(finish(on_vm1)) == []
    assert state.handle(InstanceFailed("work", on_vm1.spec.index, "vm1", "late", "instance")) == []
    assert not state.instances["work"][on_vm1.spec.index].done


def test_local_disk_failure_moves_the_instance() -> None:
    app = chain_app()
    state = JobState(app, fixed_plan(app, PassingMethod.DIRECT, list(VMS)), VMS, INPUT)
    (split,) = state.start()
    (retry,) = state.handle(InstanceFailed("split", 0, split.vm, "No space left on device", "fetch", "local",
                                           "_input/0/in", None))
    assert retry.vm != split.vm and retry.attempt == 2


def test_corrupt_app_input_fails_after_the_bound_with_a_precise_message() -> None:
    app = chain_app()
    state = JobState(app, fixed_plan(app, PassingMethod.DIRECT, list(VMS)), VMS, INPUT, max_attempts=2)
    (split,) = state.start()
    (retry,) = state.handle(InstanceFailed("split", 0, split.vm, "input _input/0/in corrupt", "fetch", "corrupt",
                                           "_input/0/in", None))
    (failed,) = state.handle(InstanceFailed("split", 0, retry.vm, "input _input/0/in corrupt", "fetch", "corrupt",
                                            "_input/0/in", None))
    assert isinstance(failed, JobFailed)
    assert "stage 'split' instance 0 failed 2 times" in failed.message and retry.vm in failed.message
    assert "corrupt" in failed.message


def test_rerun_with_different_outputs_fails_instead_of_hanging() -> None:
    app = chain_app()
    state = JobState(app, fixed_plan(app, PassingMethod.DIRECT, list(VMS)), VMS, INPUT)
    pending, done = run_until(state, "work")
    victim = dispatches(pending)[0]
    actions = state.handle(InstanceFailed("work", victim.spec.index, victim.vm, "missing", "fetch", "missing",
                                          victim.sources[0].ref.key, done[0].vm))
    (rerun,) = dispatches(actions)
    # The re-run split writes other names than before: the consumer's input can never exist.
    outs = (("renamed", 10, "x"),)
    result = state.handle(InstanceFinished("split", 0, rerun.vm, outs, False))
    failed = [a for a in result if isinstance(a, JobFailed)]
    assert failed and "deterministic" in failed[0].message


def test_nothing_to_run_is_a_failure_not_a_hang() -> None:
    app = chain_app()
    state = JobState(app, fixed_plan(app, PassingMethod.DIRECT, ["vm0"]), {"vm0": 1}, INPUT)
    (split,) = state.start()
    state.handle(finish(split))
    # Hand-break the state: forget split's outputs and lose track of its re-run (the scheduler
    # never does this itself; it stands for any bug that would leave the job waiting forever).
    state.locations.clear()
    state.instances["split"][0].done = False
    state.instances["work"][1].running_on = None
    state.running["vm0"] = 0
    state.queues["vm0"].clear()
    state._blocked = [("work", 1)]
    (failed,) = state._advance()
    assert isinstance(failed, JobFailed) and "cannot make progress" in failed.message
