"""Coordinator logic against fake agents: :class:`MockTransport` answers every request in
memory (no sockets, no processes), an in-memory object store stands in for S3. Fast: each
test is one small job of a two-stage app on two fake VMs."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import xxhash

from sonic import __version__
from sonic.app import App
from sonic.cluster.spec import ClusterSpec, VMSpec
from sonic.errors import ExecutionError, TransportError
from sonic.plan import PassingMethod, fixed_plan
from sonic.runtime.client import Timeouts
from sonic.runtime.coordinator import Coordinator
from sonic.runtime.remote import RemoteSettings, RemoteStore
from sonic.runtime.scheduler import Event, InstanceFailed, VMLost
from sonic.runtime.transport import Endpoint, MockTransport

VMS = ("vm0", "vm1")


class MemoryRemote(RemoteStore):
    """S3 in a dict: what the coordinator itself does with remote storage (stage the input,
    delete the job's prefix)."""

    def __init__(self) -> None:
        super().__init__(RemoteSettings("fake-bucket"))  # a boto3 client is made, never used
        self.objects: dict[str, bytes] = {}

    def ensure_bucket(self) -> None:
        return None

    def upload(self, path: Path, key: str, checksum: str | None = None) -> float:
        self.objects[key] = path.read_bytes()
        return 0.0

    def delete_prefix(self, prefix: str, *, best_effort: bool = False) -> int:
        gone = [k for k in self.objects if k.startswith(prefix)]
        for key in gone:
            del self.objects[key]
        return len(gone)


def _app() -> App:
    app = App("toy")

    @app.stage()
    def first(ctx: Any) -> None: ...

    @app.stage(after="first", pattern="scatter")
    def second(ctx: Any) -> None: ...

    return app


class FakeAgents:
    """The agents of the cluster: ``first`` writes two 5-byte files (``out-0``, ``out-1``: two
    instances of ``second`` by scatter), each instance of ``second`` one (``out``)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.run_reply: dict[str, Any] | None = None       # set: every run answers this
        self.run_error: dict[str, Any] | None = None       # set: the first run of `second` fails so
        self.pings_failing: set[str] = set()                # VMs that do not answer pings
        self.ran_first: list[str] = []                      # VMs that ran an instance of `first`

    def __call__(self, agent: Endpoint, request: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.requests.append((agent.name, request))
        op = request["op"]
        if op == "ping":
            if agent.name in self.pings_failing:
                raise TransportError(f"cannot connect to agent {agent.peer}: connection refused")
            return {"ok": True, "version": __version__, "name": agent.name, "slots": 1, "memory_mb": 1024, "pid": 1,
                    "busy": 0, "workers": [], "idle_workers": 0, "leases": []}
        if op == "lease":
            return {"ok": True}
        if op == "warm":
            return {"ok": True, "workers": 1}
        if op == "cancel":
            return {"ok": True, "killed": 0}
        if op == "run":
            return self.run(agent, request)
        if op == "get":
            data = self.data(request["key"])
            return {"ok": True, "size": len(data), "checksum": xxhash.xxh3_128(data).hexdigest(), "body": data}
        return {"ok": False, "kind": "request", "error": f"unknown op {op!r}"}

    @staticmethod
    def data(key: str) -> bytes:
        """The 5 bytes of object ``key`` (distinct per instance)."""
        return xxhash.xxh3_128(key.encode()).hexdigest()[:5].encode()

    def run(self, agent: Endpoint, request: dict[str, Any]) -> dict[str, Any]:
        if self.run_reply is not None:
            return self.run_reply
        if self.run_error is not None and request["stage"] == "second":
            error, self.run_error = self.run_error, None
            return error
        stage, index = request["stage"], request["index"]
        names = ["out-0", "out-1"] if stage == "first" else ["out"]
        if stage == "first":
            with self.lock:
                self.ran_first.append(agent.name)
        outputs = []
        for name in names:
            data = self.data(f"{stage}/{index}/{name}")
            outputs.append({"name": name, "size": len(data), "checksum": xxhash.xxh3_128(data).hexdigest()})
        metrics = {"stage": stage, "instance": index, "input_bytes": 5, "output_bytes": 5 * len(names),
                   "n_outputs": len(names), "wall_s": 0.01, "peak_memory_mb": 1.0, "started": 0.0, "ended": 0.01,
                   "vm": agent.name}
        return {"ok": True, "metrics": metrics, "outputs": outputs, "fetch_by_stage": {}, "upload_s": 0.0,
                "cold_start_s": 0.0}

    def ops(self) -> list[str]:
        return [request["op"] for _, request in self.requests]


def _coordinator(agents: FakeAgents, events: list[Event]) -> Coordinator:
    cluster = ClusterSpec(vms=[VMSpec(name, f"10.0.0.{i}", cores=1) for i, name in enumerate(VMS)])
    return Coordinator(cluster, b"s" * 32, transport=MockTransport(agents), remote=MemoryRemote(),
                       heartbeat=None, max_attempts=2, pack_outputs=False, observer=events.append,
                       timeouts=Timeouts(control_s=5, run_slack_s=5, stage_s=5))


def _input(tmp_path: Path) -> Path:
    path = tmp_path / "input.bin"
    path.write_bytes(b"some input")
    return path


def _run(agents: FakeAgents, tmp_path: Path, events: list[Event] | None = None) -> Any:
    """Run a job of the toy app (direct edges on both VMs); ``events`` collects what the
    scheduler was told."""
    app = _app()
    coordinator = _coordinator(agents, events if events is not None else [])
    try:
        plan = fixed_plan(app, PassingMethod.DIRECT, list(VMS))
        return coordinator.execute(app, "toy", _input(tmp_path), plan, warm=False, output_dir=tmp_path / "out")
    finally:
        coordinator.close()


def test_a_small_job_completes_through_the_fake(tmp_path: Path) -> None:
    agents, events = FakeAgents(), list[Event]()
    result = _run(agents, tmp_path, events)
    assert result.output_ok and result.app == "toy"
    assert {(s.name, s.instances) for s in result.stages} == {("first", 1), ("second", 2)}
    # The final outputs were fetched from the VMs and verified by checksum.
    assert sorted(Path(p).read_bytes() for p in result.outputs) == sorted(
        [FakeAgents.data("second/0/out"), FakeAgents.data("second/1/out")])
    ops = agents.ops()
    assert ops.count("run") == 3 and ops.count("get") == 2 and "cancel" in ops and "lease" in ops
    remote_runs = [r for vm, r in agents.requests
                   if r["op"] == "run" and r["stage"] == "second" and vm != agents.ran_first[0]]
    # A consumer of a direct edge on another VM is told where its input lives.
    assert remote_runs
    assert all(item["method"] == "direct" and item["vm"] == agents.ran_first[0] and "host" in item
               for r in remote_runs for item in r["inputs"])
    assert not [e for e in events if isinstance(e, InstanceFailed)]


def test_a_malformed_run_reply_fails_the_instance_as_a_request_error(tmp_path: Path) -> None:
    agents, events = FakeAgents(), list[Event]()
    agents.run_reply = {"ok": True, "metrics": "not a map", "outputs": []}
    with pytest.raises(ExecutionError):
        _run(agents, tmp_path, events)
    failures = [e for e in events if isinstance(e, InstanceFailed)]
    assert len(failures) == 2  # max_attempts, then the job fails
    assert all(f.kind == "request" and "malformed 'run' reply" in f.error and "$.metrics" in f.error
               for f in failures)


def test_an_unreachable_input_source_is_probed_and_declared_lost(tmp_path: Path) -> None:
    """A consumer could not fetch from vm1 and vm1 does not answer the probe: VMLost(vm1)
    comes before the consumer's failure, which names the input and its source."""
    agents = FakeAgents()
    real_run = agents.run

    def run_then_vanish(agent: Endpoint, request: dict[str, Any]) -> dict[str, Any]:
        if request["stage"] == "second" and not agents.pings_failing:
            # The producer's VM died after `first` ran there: the consumer cannot fetch from it.
            holder = agents.ran_first[0]
            agents.pings_failing.add(holder)
            return {"ok": False, "kind": "fetch", "cause": "unreachable", "input": "first/0/out-0",
                    "source": holder, "error": f"input first/0/out-0 (direct from {holder}) could not be fetched"}
        return real_run(agent, request)

    agents.run = run_then_vanish  # type: ignore[method-assign]
    events: list[Event] = []
    result = _run(agents, tmp_path, events)
    lost = [i for i, e in enumerate(events) if isinstance(e, VMLost)]
    failed = [i for i, e in enumerate(events) if isinstance(e, InstanceFailed) and e.kind == "fetch"]
    assert lost and failed and lost[0] < failed[0]
    holder = agents.ran_first[0]
    assert events[lost[0]].vm == holder  # type: ignore[attr-defined]
    failure = events[failed[0]]
    assert isinstance(failure, InstanceFailed) and failure.cause == "unreachable"
    assert failure.input_key == "first/0/out-0" and failure.source_vm == holder
    # The job still finished on the VM left: `first` ran again there, its outputs regenerated.
    assert result.output_ok
    assert len(agents.ran_first) == 2 and agents.ran_first[1] != holder
