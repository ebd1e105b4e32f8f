"""kill -9 an agent in the middle of a stage: the job still completes with validated output,
and nothing we started is left running afterwards.

The fault is injected at a precise point, not after a guessed delay: the coordinator's event
observer fires when the first ``map`` instance reports success, and the agent of the VM that
ran it is killed right then (its PID from the cluster file; only that PID). Its running
instances must be re-queued elsewhere, and every object that lived only on it (that map
output; with VM-Storage also the ``split`` chunks the other mappers still need) must be
regenerated from its inputs (lineage). ``experiments/reliability_kill.py`` repeats this 20
times and compares latencies with fault-free runs.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from reliability_helpers import (
    FAST_HEARTBEAT,
    agent_pid,
    all_pids,
    assert_gone,
    kill9,
    make_coordinator,
    options,
    worker_pids,
)

from sonic.app import load_app
from sonic.emulation.local import local_cluster
from sonic.plan import PassingMethod, fixed_plan
from sonic.runtime.scheduler import Event, InstanceFinished, VMLost


@pytest.mark.parametrize("method", [PassingMethod.DIRECT, PassingMethod.VM])
def test_kill_agent_mid_stage(tmp_path: Path, sort_input: Path, method: PassingMethod) -> None:
    app = load_app("sort")
    killed: list[str] = []
    workers: list[int] = []
    lost: list[VMLost] = []
    with local_cluster(3, "loopback", tmp_path / "cluster", options=options()) as spec:
        def observer(event: Event) -> None:
            if isinstance(event, VMLost):
                lost.append(event)
            if not killed and isinstance(event, InstanceFinished) and event.stage == "map":
                workers.extend(pid for pids in worker_pids(spec).values() for pid in pids)
                killed.append(event.vm)
                kill9(agent_pid(spec, event.vm))

        coordinator = make_coordinator(spec, observer=observer)
        try:
            result = coordinator.execute(app, "sort", sort_input, fixed_plan(app, method, spec.vm_names))
        finally:
            coordinator.close()
        workers.extend(pid for pids in worker_pids(spec).values() for pid in pids)
        pids = all_pids(spec, workers)
    assert_gone(pids)  # agents, S3 server, and every worker (the killed agent's orphans too)

    assert result.output_ok, result.output_detail
    assert killed and lost and lost[0].vm == killed[0]
    maps = [m for m in result.instances if m.stage == "map"]
    n_maps = next(s.instances for s in result.stages if s.name == "map")
    assert len(maps) > n_maps, "the map output on the killed VM must have been regenerated"
    assert not [m for m in result.instances if m.vm == killed[0] and m.stage == "reduce"], \
        "nothing may run on the killed VM after its death"


def test_hung_agent_is_declared_lost_by_the_heartbeat(tmp_path: Path, sort_input: Path) -> None:
    """SIGSTOP instead of SIGKILL: the agent's connections stay open and silent, so only the
    heartbeat (missed pings with a deadline) can tell; its work must move elsewhere."""
    app = load_app("sort")
    stopped: list[int] = []
    lost: list[VMLost] = []
    with local_cluster(3, "loopback", tmp_path / "cluster", options=options()) as spec:
        def observer(event: Event) -> None:
            if isinstance(event, VMLost):
                lost.append(event)
            if not stopped and isinstance(event, InstanceFinished) and event.stage == "map":
                pid = agent_pid(spec, event.vm)
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)

        coordinator = make_coordinator(spec, observer=observer, heartbeat=FAST_HEARTBEAT)
        try:
            result = coordinator.execute(app, "sort", sort_input, fixed_plan(app, PassingMethod.DIRECT,
                                                                             spec.vm_names))
        finally:
            coordinator.close()
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)   # let teardown stop it the ordinary way
        pids = all_pids(spec)
    assert_gone(pids)
    assert result.output_ok, result.output_detail
    assert lost and "heartbeat" in lost[0].reason, [e.reason for e in lost]
