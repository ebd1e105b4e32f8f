"""The coordinator: drives :class:`~sonic.runtime.scheduler.JobState` against real agents.

One thread per dispatched instance (bounded by the cluster's total slots) makes a blocking
``run`` call to the agent and posts the outcome as an event; the main loop feeds events to the
state machine and carries out its actions. The app input is staged in S3 before the clock
starts (production inputs live in object storage); final outputs are fetched from the VMs
after it stops, verified by checksum and handed to the workload's validator.

Fault handling (the rules themselves live in the pure scheduler):

- a :class:`~sonic.runtime.heartbeat.Heartbeat` pings every agent during the job; a VM that
  misses ``misses`` pings in a row is declared lost (``VMLost``) and every call in flight to
  it is aborted, so no dispatch thread stays blocked on a hung or unreachable VM;
- a ``run`` call that breaks at the transport level is followed by a probe (one ping with a
  deadline): no answer -> ``VMLost``; an answer -> an ordinary, retried instance failure;
- a consumer that could not reach the VM holding one of its inputs gets that VM probed the
  same way, so a dead producer VM is discovered (and its objects regenerated) at once;
- an optional per-instance timeout is enforced by the agent (the worker is killed);
- agents unreachable when the job starts are left out of it (as long as one answers).
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sonic.app import APP_INPUT, App, Pattern
from sonic.cluster.spec import ClusterSpec
from sonic.errors import AuthenticationError, ExecutionError, InputFormatError, SonicError, TransportError
from sonic.metrics import EdgeMetrics, InstanceMetrics, RunResult, StageMetrics
from sonic.plan import Plan
from sonic.reference import input_refs
from sonic.routing import ObjectRef, edge_bytes
from sonic.runtime.appship import ship_app
from sonic.runtime.client import AgentClient, RemoteCallError, Timeouts
from sonic.runtime.heartbeat import Heartbeat, HeartbeatSettings, Target, probe
from sonic.runtime.journal import Journal, JournalError, JournalHeader, replay
from sonic.runtime.lease import LeaseKeeper
from sonic.runtime.messages import RunReply
from sonic.runtime.methods import RUNTIME_METHODS
from sonic.runtime.objects import file_checksum
from sonic.runtime.remote import RemoteSettings, RemoteStore
from sonic.runtime.replan import ModelReplanner
from sonic.runtime.scheduler import (
    Dispatch,
    Event,
    InstanceFailed,
    InstanceFinished,
    JobFailed,
    JobFinished,
    JobState,
    VMLost,
)
from sonic.runtime.transport import TcpTransport, Transport

ProgressFn = Callable[[str, int, int], None]
EventObserver = Callable[[Event], None]
logger = logging.getLogger("sonic.coordinator")


@dataclass
class AgentHandle:
    name: str
    host: str
    port: int
    slots: int
    client: AgentClient


@dataclass
class _RunLog:
    instances: list[InstanceMetrics] = field(default_factory=list)
    fetch_s: dict[tuple[str, str], float] = field(default_factory=dict)   # (src, dst) -> seconds
    upload_s: dict[str, float] = field(default_factory=dict)              # producer stage -> seconds
    puts: int = 0
    gets: int = 0
    stage_start: dict[str, float] = field(default_factory=dict)
    stage_end: dict[str, float] = field(default_factory=dict)
    vms_used: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)  # dispatch threads append concurrently


class Coordinator:
    """Executes plans on a cluster. ``app_spec`` must be loadable on the agents (workload name or module:attr)."""

    def __init__(self, cluster: ClusterSpec, secret: bytes, *, timeouts: Timeouts = Timeouts(),
                 max_attempts: int = 3, progress: ProgressFn | None = None,
                 heartbeat: HeartbeatSettings | None = HeartbeatSettings(),
                 instance_timeout_s: float | None = None, observer: EventObserver | None = None,
                 pack_outputs: bool = True, transport: Transport | None = None,
                 remote: RemoteStore | None = None) -> None:
        """``timeouts`` bounds every network wait (and agent-to-agent transfers); ``heartbeat``
        None disables failure detection beyond broken connections; ``instance_timeout_s``
        overrides every stage's timeout for this run (None: each stage's ``timeout_s``, else
        ``timeouts.stage_s``); ``observer`` sees every event before the scheduler does (tests
        and experiments inject faults at precise points with it); ``pack_outputs`` False keeps
        one object per output file even on shuffle edges (see ``JobState``). ``transport``
        carries every request to the agents (None: authenticated TCP; tests pass a
        :class:`~sonic.runtime.transport.MockTransport`), ``remote`` is the cluster's object
        storage (None: the cluster file's S3)."""
        self.pack_outputs = pack_outputs
        self.cluster = cluster
        self.secret = secret
        self.timeouts = timeouts
        self.max_attempts = max_attempts
        self.progress = progress
        self.heartbeat = heartbeat
        self.instance_timeout_s = instance_timeout_s
        self.observer = observer
        self.transport = transport if transport is not None else TcpTransport(secret)
        self.remote = remote if remote is not None else RemoteStore(RemoteSettings.for_cluster(cluster))
        self.agents: dict[str, AgentHandle] = {}
        for vm in cluster.vms:
            client = AgentClient(vm.host, vm.agent_port, secret, vm.name, timeouts, self.transport.session())
            self.agents[vm.name] = AgentHandle(vm.name, vm.host, vm.agent_port, vm.cores, client)

    def close(self) -> None:
        for agent in self.agents.values():
            agent.client.close()

    def reachable_agents(self) -> list[str]:
        """Names of the agents that answer a ping now. A version mismatch still raises (it
        needs a redeploy); unreachable agents are left out, unless none answers at all."""
        reachable: list[str] = []
        errors: list[str] = []
        for name, agent in self.agents.items():
            # A quick probe first (the heartbeat deadline), so a hung agent costs seconds, not
            # the control timeout; then the real ping, whose version check must not be skipped.
            error = self._probe(name)
            if isinstance(error, AuthenticationError):
                raise error  # a wrong secret is a misconfiguration of the whole cluster file
            if error is not None:
                errors.append(str(error))
                continue
            agent.client.ping()
            reachable.append(name)
        if not reachable:
            raise TransportError(f"no agent of the cluster answers: {'; '.join(errors)}")
        for message in errors:
            logger.warning("leaving an agent out of this job: %s", message)
        return reachable

    def _target(self, name: str) -> Target:
        agent = self.agents[name]
        return Target(name, agent.host, agent.port)

    def _probe(self, name: str) -> SonicError | None:
        """None if agent ``name`` answers one ping within the heartbeat deadline, else why not."""
        timeout = (self.heartbeat or HeartbeatSettings()).timeout_s
        return probe(self._target(name), self.secret, timeout, self.transport)

    def warm(self, app_spec: str, exclude: set[str] | frozenset[str] = frozenset()) -> None:
        agents = [a for name, a in self.agents.items() if name not in exclude]
        with ThreadPoolExecutor(max_workers=max(1, len(agents))) as pool:
            list(pool.map(lambda a: a.client.warm(app_spec), agents))

    # ------------------------------------------------------------------ execute
    def stage_timeout(self, app: App, stage: str) -> float:
        """The limit of one instance of ``stage``: the run's override, else the stage's own, else the default."""
        if self.instance_timeout_s is not None:
            return self.instance_timeout_s
        return app.stages[stage].timeout_s or self.timeouts.stage_s

    def execute(self, app: App, app_spec: str, input_path: Path, plan: Plan, *,
                output_dir: Path | None = None, warm: bool = True, replanner: ModelReplanner | None = None,
                journal_dir: Path | None = None, resume: str | None = None) -> RunResult:
        """Run ``plan``; a ``replanner`` may re-plan stages not started yet (:mod:`sonic.runtime.replan`),
        and its records become the report's ``replans``. With ``journal_dir`` every finished
        instance is journaled there (:mod:`sonic.runtime.journal`); ``resume`` names a job whose
        coordinator crashed: its journaled plan is run again, re-executing only what is not done."""
        plan.check(app, list(self.agents))
        job = uuid.uuid4().hex[:16]
        refs, paths = input_refs(Path(input_path))
        refs = [ObjectRef(r.stage, r.instance, r.name, r.size, file_checksum(paths[r.key])) for r in refs]
        journal: Journal | None = None
        replayed: list[InstanceFinished] = []
        if resume is not None:
            if journal_dir is None:
                raise JournalError("--resume needs the directory of job journals (the --root of the crashed run)")
            job, journal = resume, Journal(journal_dir, resume)
            header, replayed = journal.read()
            if header.app != app.name:
                raise JournalError(f"job {job} ran app {header.app!r}, not {app.name!r}; resume it with that app")
            if header.inputs != {r.key: r.checksum for r in refs}:
                raise JournalError(f"the input differs from the one job {job} ran on; pass the same --input")
            plan = Plan.from_json(header.plan, source=f"journal of job {job}").check(app, list(self.agents))
        elif journal_dir is not None:
            journal = Journal(journal_dir, job)
        lost = set(self.agents) - set(self.reachable_agents())
        # The user's own module:attr code goes to every VM first (content-hashed; versioned spec).
        app_spec = ship_app({n: a.client for n, a in self.agents.items()}, app, app_spec, exclude=lost).app_spec
        keep_dir = output_dir is not None
        out_dir = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix=f"sonic-out-{app.name}-"))
        events: queue.Queue[Event] = queue.Queue()
        lease = LeaseKeeper(job, {n: self._target(n) for n in self.agents if n not in lost}, self.secret,
                            self.timeouts.lease_s, lambda vm, why: events.put(VMLost(vm, why)), self.transport)
        failed = True
        try:
            # Inside the try: a job that fails from here on (even while staging its input)
            # leaves nothing behind, neither its input in S3 nor work on any agent.
            lease.start()
            if resume is not None and lease.ended:
                raise JournalError(f"job {job} can no longer be resumed: its lease ran out on "
                                   f"{', '.join(sorted(lease.ended))} and the agents dropped its data; run it "
                                   "again without --resume")
            if journal is not None:
                journal.create(JournalHeader(job, app.name, app_spec, {r.key: r.checksum for r in refs},
                                             plan.to_json()))
            self.remote.ensure_bucket()
            for ref in refs:
                self.remote.upload(paths[ref.key], f"{job}/{ref.key}", ref.checksum)
            if warm:
                self.warm(app_spec, exclude=lost)
            state, log, latency = self._drive(app, app_spec, job, plan, refs, lost, events, replanner,
                                              journal, replayed)
            final = self._collect(app, state, job, out_dir)
            verdict = app.check_output(Path(input_path), final)
            ok, detail = verdict.ok, verdict.detail
            features = app.features_of(Path(input_path))
            failed = False
            # The plan as executed: a re-plan may have changed edges of stages started later.
            result = self._report(app, state.plan, state, log, latency, refs, ok, detail, final, features)
            result.replans = list(replanner.records) if replanner is not None else []
            return result
        finally:
            lease.stop()
            self._cleanup(job, skip=lost, reason="its run failed" if failed else "its run finished")
            if journal is not None:
                journal.remove()  # the job ended (either way) on every agent: nothing left to resume
            if not keep_dir:
                shutil.rmtree(out_dir, ignore_errors=True)

    def _drive(self, app: App, app_spec: str, job: str, plan: Plan, refs: list[ObjectRef],
               lost: set[str], events: queue.Queue[Event],
               replanner: ModelReplanner | None = None, journal: Journal | None = None,
               replayed: list[InstanceFinished] | None = None) -> tuple[JobState, _RunLog, float]:
        """Run the job; ``lost`` holds VMs left out at the start and grows with VMs lost during it."""
        state = JobState(app, plan, {n: a.slots for n, a in self.agents.items() if n not in lost}, refs,
                         max_attempts=self.max_attempts, replanner=replanner, pack_outputs=self.pack_outputs)
        log = _RunLog()
        limits = {stage: self.stage_timeout(app, stage) for stage in app.topological_order()}
        quiet_s = self.timeouts.run_deadline(max(limits.values())) + self.timeouts.control_s
        produced: dict[str, int] = {}  # stage -> files written by its finished instances
        total_slots = sum(a.slots for a in self.agents.values())
        done_count: dict[str, int] = {}
        monitor = None
        if self.heartbeat is not None:
            targets = {n: self._target(n) for n in self.agents if n not in lost}
            monitor = Heartbeat(targets, self.secret, self.heartbeat,
                                lambda vm, reason: events.put(VMLost(vm, reason)), self.transport).start()
        t0 = time.perf_counter()
        try:
            with ThreadPoolExecutor(max_workers=total_slots, thread_name_prefix="sonic-dispatch") as pool:
                if replayed:
                    actions, taken = replay(state, replayed)
                    logger.info("job %s resumed: %d instance(s) done according to its journal", job, taken)
                    for done in replayed:
                        produced[done.stage] = produced.get(done.stage, 0) + len(done.outputs)
                else:
                    actions = state.start()
                while True:
                    for action in actions:
                        if isinstance(action, JobFinished):
                            return state, log, time.perf_counter() - t0
                        if isinstance(action, JobFailed):
                            raise ExecutionError(f"job {job} of {app.name} failed: {action.message}")
                        assert isinstance(action, Dispatch)
                        log.stage_start.setdefault(action.spec.stage, time.perf_counter() - t0)
                        pool.submit(self._run_one, app_spec, job, action, events, log, t0, limits[action.spec.stage])
                    try:
                        # Every dispatch thread posts its outcome within its run deadline, so
                        # this wait ends; the bound only turns a bug into an error, not a hang.
                        event = events.get(timeout=quiet_s)
                    except queue.Empty:
                        raise ExecutionError(f"job {job} of {app.name}: no instance finished or failed for "
                                             f"{quiet_s:g}s, longer than any run may take; giving up") from None
                    if self.observer is not None:
                        self.observer(event)
                    self._stop_on_fatal(app, job, state, event, produced)
                    if isinstance(event, VMLost) and event.vm in state.alive:
                        logger.warning("VM %s lost: %s", event.vm, event.reason)
                        lost.add(event.vm)
                        if monitor is not None:
                            monitor.forget(event.vm)
                        # Unblock every thread still waiting on that VM; their reports are
                        # ignored by the scheduler (the VM is no longer alive).
                        self.agents[event.vm].client.abort()
                    if isinstance(event, InstanceFinished) and event.vm in state.alive:
                        if journal is not None:
                            journal.record(event)
                        done_count[event.stage] = done_count.get(event.stage, 0) + 1
                        if self.progress:
                            self.progress(event.stage, done_count[event.stage], len(state.stage_specs(event.stage)))
                    actions = state.handle(event)
        finally:
            if monitor is not None:
                monitor.stop()

    def _stop_on_fatal(self, app: App, job: str, state: JobState, event: Event, produced: dict[str, int]) -> None:
        """Failures no retry can fix end the job at once, with one line naming what to change:
        an input the app cannot read, a stage that wrote nothing a consumer needs. (A stage over
        its timeout is retried like any failed instance, as serverless platforms do.)"""
        if isinstance(event, InstanceFailed) and event.vm in state.alive:
            where = f"stage {event.stage!r} instance {event.index} on VM {event.vm}"
            if event.kind == "input":
                detail = event.error.split(" failed", 1)[-1].lstrip(" :")
                raise InputFormatError(f"the input of {app.name} cannot be read by {where}: {detail}")
        if not isinstance(event, InstanceFinished) or event.vm not in state.alive:
            return
        produced[event.stage] = produced.get(event.stage, 0) + len(event.outputs)
        edges = app.out_edges(event.stage)
        one_to_one = [e for e in edges if e.pattern is Pattern.ONE_TO_ONE]
        instances = state.instances.get(event.stage, [])
        stage_done = bool(instances) and all(i.done or (i.spec.index == event.index) for i in instances)
        empty_edge = one_to_one[0] if one_to_one and not event.outputs else (
            edges[0] if edges and stage_done and produced[event.stage] == 0 else None)
        if empty_edge is not None:
            raise ExecutionError(
                f"stage {event.stage!r} instance {event.index} on VM {event.vm} wrote no output, but edge "
                f"{event.stage} -> {empty_edge.dst} ({empty_edge.pattern.value}) needs its files; make "
                f"{event.stage!r} write at least one file with ctx.output(name)")

    def _run_one(self, app_spec: str, job: str, action: Dispatch, events: queue.Queue[Event],
                 log: _RunLog, t0: float, limit_s: float) -> None:
        """Dispatch-thread body. Whatever happens, exactly one outcome event is posted for the
        instance (plus VMLost where due): a thread dying silently would hang the job."""
        try:
            self._dispatch_and_report(app_spec, job, action, events, log, t0, limit_s)
        except Exception as exc:  # noqa: BLE001 - reported as the instance's failure, never swallowed
            logger.exception("dispatch of %s/%s to %s failed unexpectedly", action.spec.stage, action.spec.index,
                             action.vm)
            events.put(InstanceFailed(action.spec.stage, action.spec.index, action.vm,
                                      f"internal error: {exc!r}", "request"))

    def _dispatch_and_report(self, app_spec: str, job: str, action: Dispatch, events: queue.Queue[Event],
                             log: _RunLog, t0: float, limit_s: float) -> None:
        spec, vm = action.spec, action.vm
        inputs = []
        for src in action.sources:
            item: dict[str, Any] = {"stage": src.ref.stage, "instance": src.ref.instance, "name": src.ref.name,
                                    "size": src.ref.size, "checksum": src.ref.checksum, "method": src.method}
            if src.ref.pack:  # one partition of a packed object: fetched by range
                item.update(pack=src.ref.pack, offset=src.ref.offset)
            if src.method == "direct":
                holder = self.agents[src.vm or ""]
                item.update(vm=holder.name, host=holder.host, port=holder.port)
            inputs.append(item)
        request = {"job": job, "app": app_spec, "stage": spec.stage, "index": spec.index,
                   "num_instances": spec.num_instances, "key": spec.key, "inputs": inputs, "upload": action.upload,
                   "partitions": dict(spec.partitions), "pack": action.pack,
                   "peer_timeouts": {"connect_s": self.timeouts.connect_s, "control_s": self.timeouts.control_s,
                                     "transfer_idle_s": self.timeouts.transfer_idle_s}}
        request["timeout_s"] = limit_s
        request["lease_s"] = self.timeouts.lease_s
        try:
            reply = self.agents[vm].client.run(request)
        except ExecutionError as exc:
            events.put(InstanceFailed(spec.stage, spec.index, vm, str(exc), "instance"))
            return
        except RemoteCallError as exc:
            source = exc.source if exc.source in self.agents else None
            if exc.kind == "fetch" and exc.cause == "unreachable" and source is not None:
                # Is the holder of the input gone? Then say so first, so its objects are
                # regenerated and this failure is not held against the consumer.
                reason = self._probe(source)
                if reason is not None:
                    events.put(VMLost(source, f"{vm} could not fetch from it and it does not answer: {reason}"))
            events.put(InstanceFailed(spec.stage, spec.index, vm, str(exc), exc.kind, exc.cause, exc.input, source))
            return
        except TransportError as exc:
            reason = self._probe(vm)
            if reason is not None:
                events.put(VMLost(vm, f"{exc}; it does not answer: {reason}"))
            else:  # the agent is fine: a broken connection, retried like any failure
                events.put(InstanceFailed(spec.stage, spec.index, vm, str(exc), "instance"))
            return
        except SonicError as exc:
            events.put(InstanceFailed(spec.stage, spec.index, vm, str(exc), "instance"))
            return
        self._record(action, reply, log, t0, events)

    def _record(self, action: Dispatch, reply: RunReply, log: _RunLog, t0: float,
                events: queue.Queue[Event]) -> None:
        spec, vm = action.spec, action.vm
        metrics = dataclasses.replace(reply.metrics, attempt=action.attempt)
        with log.lock:
            log.instances.append(metrics)
            log.vms_used.add(vm)
            for src, seconds in reply.fetch_by_stage.items():
                log.fetch_s[(src, spec.stage)] = log.fetch_s.get((src, spec.stage), 0.0) + seconds
            log.upload_s[spec.stage] = log.upload_s.get(spec.stage, 0.0) + reply.upload_s
            # An empty partition is made locally without a request (RemoteStore.download).
            log.gets += sum(1 for s in action.sources if s.method == "remote" and (s.ref.size or not s.ref.pack))
            if action.upload:
                log.puts += len(reply.outputs)
            log.stage_end[spec.stage] = time.perf_counter() - t0
        outputs: list[tuple[str, int, str]] = []
        ranges: dict[str, tuple[str, int]] = {}
        for o in reply.outputs:
            if o.partitions is not None:  # a packed object: the scheduler tracks its partitions
                for name, offset, length, checksum in o.partitions:
                    outputs.append((name, length, checksum))
                    ranges[name] = (o.name, offset)
            else:
                outputs.append((o.name, o.size, o.checksum))
        events.put(InstanceFinished(spec.stage, spec.index, vm, tuple(outputs), action.upload,
                                    dataclasses.asdict(metrics), ranges))

    # ------------------------------------------------------------------ after the run
    def _collect(self, app: App, state: JobState, job: str, out_dir: Path) -> list[Path]:
        final: list[Path] = []
        for sink in app.sinks():
            for ref, vm in state.outputs(sink):
                dest = out_dir / ref.stage / str(ref.instance) / ref.name
                self.agents[vm].client.get_to_file(job, ref.key, dest, size=ref.size, checksum=ref.checksum)
                final.append(dest)
        return final

    def _cleanup(self, job: str, skip: set[str] | frozenset[str] = frozenset(), reason: str = "its run ended") -> None:
        def end(name: str) -> None:
            if name in skip:
                # Declared lost: it may be back (a stopped process, a healed link), so tell it
                # too, with the heartbeat's short deadline so a still-hung VM costs seconds.
                deadline = (self.heartbeat or HeartbeatSettings()).timeout_s
                agent = self.agents[name]
                client = AgentClient(agent.host, agent.port, self.secret, name,
                                     Timeouts(connect_s=deadline, control_s=deadline), self.transport.session())
            else:
                client = self.agents[name].client
            try:
                client.cancel(job, reason)
            except SonicError as exc:
                # Unreachable now: no renewal reaches it either, so its lease expires and it
                # drops the job's work and objects on its own.
                logger.warning("could not end job %s on %s (its lease will): %s", job, name, exc)
            finally:
                if name in skip:
                    client.close()

        with ThreadPoolExecutor(max_workers=max(1, len(self.agents)), thread_name_prefix="sonic-cleanup") as pool:
            list(pool.map(end, self.agents))
        try:
            self.remote.delete_prefix(f"{job}/", best_effort=True)
        except TransportError:
            pass  # the bucket is scratch space; a failed cleanup must not turn a good run into a failure

    def _report(self, app: App, plan: Plan, state: JobState, log: _RunLog, latency: float,
                refs: list[ObjectRef], ok: bool, detail: str, final: list[Path],
                features: dict[str, float]) -> RunResult:
        edges = []
        for e in app.edges():
            method = plan.edge(e.src, e.dst).method
            seconds = log.fetch_s.get((e.src, e.dst), 0.0)
            if RUNTIME_METHODS.get(method).needs_remote:
                seconds += log.upload_s.get(e.src, 0.0)
            stored = len({r.stored_key for i in state.instances.get(e.src, []) for r in i.outputs})
            edges.append(EdgeMetrics(e.src, e.dst, method.value, edge_bytes(state.stage_specs(e.dst), e.src), seconds,
                                     stored))
        stages = []
        for s in app.topological_order():
            rows = [m for m in log.instances if m.stage == s]
            start, end = log.stage_start.get(s, 0.0), log.stage_end.get(s, 0.0)
            stages.append(StageMetrics(s, len(state.stage_specs(s)), max(end - start, 0.0),
                                       max((m.peak_memory_mb for m in rows), default=0.0),
                                       sum(m.input_bytes for m in rows), sum(m.output_bytes for m in rows)))
        prices = self.cluster.prices
        vm_cost = sum(self.cluster.vm(vm).price_per_hour for vm in log.vms_used) * latency / 3600.0
        s3_cost = log.puts * prices.s3_put_per_1000 / 1000 + log.gets * prices.s3_get_per_1000 / 1000
        return RunResult(
            app=app.name, strategy=plan.strategy, input_bytes=sum(r.size for r in refs if r.stage == APP_INPUT),
            latency_s=latency, output_ok=ok, output_detail=detail, edges=edges, stages=stages,
            instances=sorted(log.instances, key=lambda m: (m.started, m.stage, m.instance)),
            predicted_latency_s=plan.predicted.get("latency_s"), cost_usd=vm_cost + s3_cost,
            outputs=[str(p) for p in final], features=features, s3_requests={"put": log.puts, "get": log.gets},
        )
