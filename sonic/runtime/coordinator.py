"""The coordinator: drives :class:`~sonic.runtime.scheduler.JobState` against real agents.

One thread per dispatched instance (bounded by the cluster's total slots) makes a blocking
``run`` call to the agent and posts the outcome as an event; the main loop feeds events to the
state machine and carries out its actions. The app input is staged in S3 before the clock
starts (production inputs live in object storage); final outputs are fetched from the VMs
after it stops, verified by checksum and handed to the workload's validator.
"""

from __future__ import annotations

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

from sonic.app import APP_INPUT, App
from sonic.cluster.spec import ClusterSpec
from sonic.errors import ExecutionError, SonicError, TransportError
from sonic.metrics import EdgeMetrics, InstanceMetrics, RunResult, StageMetrics
from sonic.plan import PassingMethod, Plan
from sonic.reference import input_refs
from sonic.routing import ObjectRef, edge_bytes
from sonic.runtime.client import AgentClient, RemoteCallError, Timeouts
from sonic.runtime.objects import file_checksum
from sonic.runtime.remote import RemoteSettings, RemoteStore
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

ProgressFn = Callable[[str, int, int], None]


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
                 max_attempts: int = 3, progress: ProgressFn | None = None) -> None:
        self.cluster = cluster
        self.secret = secret
        self.max_attempts = max_attempts
        self.progress = progress
        self.remote = RemoteStore(RemoteSettings.for_cluster(cluster))
        self.agents: dict[str, AgentHandle] = {}
        for vm in cluster.vms:
            client = AgentClient(vm.host, vm.agent_port, secret, vm.name, timeouts)
            self.agents[vm.name] = AgentHandle(vm.name, vm.host, vm.agent_port, vm.cores, client)

    def close(self) -> None:
        for agent in self.agents.values():
            agent.client.close()

    def check_agents(self) -> dict[str, dict[str, Any]]:
        """Ping every agent (version handshake); raise naming the first unreachable one."""
        return {name: agent.client.ping() for name, agent in self.agents.items()}

    def warm(self, app_spec: str) -> None:
        with ThreadPoolExecutor(max_workers=len(self.agents)) as pool:
            list(pool.map(lambda a: a.client.warm(app_spec), self.agents.values()))

    # ------------------------------------------------------------------ execute
    def execute(self, app: App, app_spec: str, input_path: Path, plan: Plan, *,
                output_dir: Path | None = None, warm: bool = True) -> RunResult:
        plan.check(app, list(self.agents))
        job = uuid.uuid4().hex[:16]
        refs, paths = input_refs(Path(input_path))
        refs = [ObjectRef(r.stage, r.instance, r.name, r.size, file_checksum(paths[r.key])) for r in refs]
        self.check_agents()
        self.remote.ensure_bucket()
        for ref in refs:
            self.remote.upload(paths[ref.key], f"{job}/{ref.key}", ref.checksum)
        if warm:
            self.warm(app_spec)
        keep_dir = output_dir is not None
        out_dir = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix=f"sonic-out-{app.name}-"))
        try:
            state, log, latency = self._drive(app, app_spec, job, plan, refs)
            final = self._collect(app, state, job, out_dir)
            if app.validator is not None:
                verdict = app.validator(Path(input_path), final)
                ok, detail = verdict.ok, verdict.detail
            else:
                ok, detail = True, "no validator defined; outputs not checked"
            features = app.feature_extractor(Path(input_path)) if app.feature_extractor else {}
            return self._report(app, plan, state, log, latency, refs, ok, detail, final, features)
        finally:
            self._cleanup(job)
            if not keep_dir:
                shutil.rmtree(out_dir, ignore_errors=True)

    def _drive(self, app: App, app_spec: str, job: str, plan: Plan,
               refs: list[ObjectRef]) -> tuple[JobState, _RunLog, float]:
        state = JobState(app, plan, {n: a.slots for n, a in self.agents.items()}, refs,
                         max_attempts=self.max_attempts)
        events: queue.Queue[Event] = queue.Queue()
        log = _RunLog()
        total_slots = sum(a.slots for a in self.agents.values())
        done_count: dict[str, int] = {}
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=total_slots, thread_name_prefix="sonic-dispatch") as pool:
            actions = state.start()
            while True:
                for action in actions:
                    if isinstance(action, JobFinished):
                        return state, log, time.perf_counter() - t0
                    if isinstance(action, JobFailed):
                        raise ExecutionError(f"job {job} of {app.name} failed: {action.message}")
                    assert isinstance(action, Dispatch)
                    log.stage_start.setdefault(action.spec.stage, time.perf_counter() - t0)
                    pool.submit(self._run_one, app_spec, job, action, events, log, t0)
                event = events.get()
                if isinstance(event, InstanceFinished):
                    done_count[event.stage] = done_count.get(event.stage, 0) + 1
                    if self.progress:
                        self.progress(event.stage, done_count[event.stage], len(state.stage_specs(event.stage)))
                actions = state.handle(event)

    def _run_one(self, app_spec: str, job: str, action: Dispatch, events: queue.Queue[Event],
                 log: _RunLog, t0: float) -> None:
        spec, vm = action.spec, action.vm
        inputs = []
        for src in action.sources:
            item: dict[str, Any] = {"stage": src.ref.stage, "instance": src.ref.instance, "name": src.ref.name,
                                    "size": src.ref.size, "checksum": src.ref.checksum, "method": src.method}
            if src.method == "direct":
                holder = self.agents[src.vm or ""]
                item.update(vm=holder.name, host=holder.host, port=holder.port)
            inputs.append(item)
        request = {"job": job, "app": app_spec, "stage": spec.stage, "index": spec.index,
                   "num_instances": spec.num_instances, "key": spec.key, "inputs": inputs, "upload": action.upload}
        try:
            reply = self.agents[vm].client.run(request)
        except ExecutionError as exc:
            events.put(InstanceFailed(spec.stage, spec.index, vm, str(exc), "instance"))
            return
        except RemoteCallError as exc:
            events.put(InstanceFailed(spec.stage, spec.index, vm, str(exc), exc.kind))
            return
        except TransportError as exc:
            events.put(VMLost(vm, str(exc)))
            events.put(InstanceFailed(spec.stage, spec.index, vm, str(exc), "fetch"))
            return
        except SonicError as exc:
            events.put(InstanceFailed(spec.stage, spec.index, vm, str(exc), "instance"))
            return
        m = dict(reply["metrics"])
        m["attempt"] = action.attempt
        metrics = InstanceMetrics(**{k: v for k, v in m.items() if k in InstanceMetrics.__dataclass_fields__})
        with log.lock:
            log.instances.append(metrics)
            log.vms_used.add(vm)
            for src, seconds in reply.get("fetch_by_stage", {}).items():
                log.fetch_s[(src, spec.stage)] = log.fetch_s.get((src, spec.stage), 0.0) + seconds
            log.upload_s[spec.stage] = log.upload_s.get(spec.stage, 0.0) + float(reply.get("upload_s", 0.0))
            log.gets += sum(1 for s in action.sources if s.method == "remote")
            if action.upload:
                log.puts += len(reply["outputs"])
            log.stage_end[spec.stage] = time.perf_counter() - t0
        outputs = tuple((o["name"], int(o["size"]), o["checksum"]) for o in reply["outputs"])
        events.put(InstanceFinished(spec.stage, spec.index, vm, outputs, action.upload, m))

    # ------------------------------------------------------------------ after the run
    def _collect(self, app: App, state: JobState, job: str, out_dir: Path) -> list[Path]:
        final: list[Path] = []
        for sink in app.sinks():
            for ref, vm in state.outputs(sink):
                dest = out_dir / ref.stage / str(ref.instance) / ref.name
                self.agents[vm].client.get_to_file(job, ref.key, dest, size=ref.size, checksum=ref.checksum)
                final.append(dest)
        return final

    def _cleanup(self, job: str) -> None:
        for agent in self.agents.values():
            try:
                agent.client.drop(job)
            except SonicError:
                pass  # an unreachable agent keeps its scratch; `cluster down` removes its data dir
        try:
            self.remote.delete_prefix(f"{job}/")
        except TransportError:
            pass  # the bucket is scratch space; a failed cleanup must not turn a good run into a failure

    def _report(self, app: App, plan: Plan, state: JobState, log: _RunLog, latency: float,
                refs: list[ObjectRef], ok: bool, detail: str, final: list[Path],
                features: dict[str, float]) -> RunResult:
        edges = []
        for e in app.edges():
            method = plan.edge(e.src, e.dst).method
            seconds = log.fetch_s.get((e.src, e.dst), 0.0)
            if method is PassingMethod.REMOTE:
                seconds += log.upload_s.get(e.src, 0.0)
            edges.append(EdgeMetrics(e.src, e.dst, method.value, edge_bytes(state.stage_specs(e.dst), e.src), seconds))
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
            outputs=[str(p) for p in final], features=features,
        )
