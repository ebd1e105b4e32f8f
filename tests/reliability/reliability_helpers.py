"""Helpers of the fault-injection tests: clusters, coordinators with fast failure detection,
PIDs, and the check that nothing we started is still running."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from sonic.cluster.spec import ClusterSpec
from sonic.emulation.local import HarnessOptions
from sonic.emulation.procs import backoff, pid_alive
from sonic.runtime.client import AgentClient, Timeouts
from sonic.runtime.coordinator import Coordinator
from sonic.runtime.heartbeat import HeartbeatSettings
from sonic.runtime.protocol import read_secret

FAULTY_SPEC = "tests.reliability.faultapps:FAULTY"
# Big enough that sort fans out (CHUNK_BYTES is 4 MB: 4 mappers x 4 reducers), small enough
# that a run takes about a second on loopback.
SORT_BYTES = 16_000_000
# Failure detection for tests: quicker than the defaults, yet tolerant of a loaded CI machine
# (a false "VM lost" would not break a job, but it would blur what a test proves).
TEST_HEARTBEAT = HeartbeatSettings(interval_s=0.5, timeout_s=2.0, misses=3)
# For the test whose point is detection: a hung agent is declared lost within ~2.5 s.
FAST_HEARTBEAT = HeartbeatSettings(interval_s=0.25, timeout_s=1.0, misses=2)
# How long we wait for processes to exit after teardown (they get SIGTERM, then SIGKILL).
EXIT_DEADLINE_S = 15.0


def options(**kwargs: object) -> HarnessOptions:
    return HarnessOptions(ssh_config_path=None, **kwargs)  # type: ignore[arg-type]


def make_coordinator(spec: ClusterSpec, **kwargs: object) -> Coordinator:
    assert spec.secret_file
    kwargs.setdefault("heartbeat", TEST_HEARTBEAT)
    kwargs.setdefault("timeouts", Timeouts(connect_s=2.0, control_s=10.0, transfer_idle_s=5.0))
    return Coordinator(spec, read_secret(spec.secret_file), **kwargs)  # type: ignore[arg-type]


def agent_pid(spec: ClusterSpec, vm: str) -> int:
    assert spec.local is not None
    return spec.local.pids[f"agent-{vm}"]


def worker_pids(spec: ClusterSpec) -> dict[str, list[int]]:
    """Each live agent's worker PIDs, as its ping reports them."""
    assert spec.secret_file
    secret = read_secret(spec.secret_file)
    out: dict[str, list[int]] = {}
    for vm in spec.vms:
        if not pid_alive(agent_pid(spec, vm.name)):
            continue
        client = AgentClient(vm.host, vm.agent_port, secret, vm.name, Timeouts(connect_s=2.0, control_s=5.0))
        try:
            out[vm.name] = list(client.call("ping").get("workers", []))
        finally:
            client.close()
    return out


def all_pids(spec: ClusterSpec, extra: list[int] | None = None) -> list[int]:
    assert spec.local is not None
    return [*spec.local.pids.values(), *(extra or [])]


def assert_gone(pids: list[int]) -> None:
    """Every PID has exited (polling with backoff up to a deadline; no fixed sleep)."""
    alive: list[int] = list(pids)
    for _ in backoff(time.monotonic() + EXIT_DEADLINE_S):
        alive = [pid for pid in alive if pid_alive(pid)]
        if not alive:
            return
    raise AssertionError(f"processes still running after teardown: {alive}")


def kill9(pid: int) -> None:
    """kill -9 one PID we started (and only that one)."""
    os.kill(pid, signal.SIGKILL)


def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    for _ in backoff(time.monotonic() + timeout_s):
        if predicate():
            return
    raise AssertionError(f"timed out waiting for {what}")


def stage_objects(spec: ClusterSpec, stage: str) -> list[Path]:
    """Files of ``stage`` in every VM's object store (all jobs)."""
    return sorted(p for vm in spec.vms for p in Path(vm.data_dir, "objects").glob(f"*/{stage}/*/*") if p.is_file())


def s3_control(spec: ClusterSpec, what: str, body: dict[str, object] | None = None) -> dict[str, object]:
    """GET /_sonic/stats or PUT /_sonic/faults on the cluster's embedded S3 server."""
    import json
    import urllib.request

    url = f"{spec.remote_storage.endpoint_url}/_sonic/{what}"
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                     method="PUT" if body is not None else "GET")
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.loads(response.read()))
