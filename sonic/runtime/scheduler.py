"""The coordinator's scheduling state machine: events in, actions out, no sockets.

Like dask/distributed's ``WorkerState``, :class:`JobState` knows nothing about networking: the
driver (:mod:`sonic.runtime.coordinator`) feeds it events (an instance finished or failed, a
VM was lost) and carries out the actions it returns (dispatch an instance to a VM, finish or
fail the job). This keeps every scheduling rule unit-testable without a cluster.

Rules:
- A stage starts when all its producer stages are done (stage barrier); its instances come
  from :func:`sonic.routing.route_instances`, so scatter fanout is decided at run time.
- Placement: a consumer of a ``vm`` edge runs on the VM holding most of its ``vm``-edge input
  bytes (VM-Storage reads in place). Other stages follow the plan's placement proportions,
  scaled to the actual instance count by largest remainder.
- Each VM runs at most ``slots`` instances at once; extra instances queue on that VM.
- Inputs: on the same VM -> ``local``; else by the edge's method: ``remote`` if the object was
  uploaded, otherwise ``direct`` from the VM holding it (a ``vm`` edge whose consumer had to
  run elsewhere, e.g. a shuffle whose inputs live on several VMs, falls back to ``direct``).
- Failures: an instance is retried on another VM up to ``max_attempts`` times; then the job
  fails naming stage, instance, VM and error. A lost VM's running instances are re-queued and
  producers whose outputs lived only there are re-executed from their inputs (lineage).
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sonic.app import APP_INPUT, App
from sonic.plan import PassingMethod, Plan
from sonic.routing import InstanceSpec, ObjectRef, route_instances


# ---------------------------------------------------------------------------- events
@dataclass(frozen=True)
class InstanceFinished:
    stage: str
    index: int
    vm: str
    outputs: tuple[tuple[str, int, str], ...]  # (name, size, checksum)
    uploaded: bool
    metrics: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InstanceFailed:
    stage: str
    index: int
    vm: str
    error: str
    kind: str = "instance"   # "instance": the function failed; "fetch": an input could not be had


@dataclass(frozen=True)
class VMLost:
    vm: str
    reason: str


Event = InstanceFinished | InstanceFailed | VMLost


# ---------------------------------------------------------------------------- actions
@dataclass(frozen=True)
class InputSource:
    ref: ObjectRef
    method: str            # "local" | "direct" | "remote"
    vm: str | None         # VM holding the object (direct / local)


@dataclass(frozen=True)
class Dispatch:
    spec: InstanceSpec
    vm: str
    sources: tuple[InputSource, ...]
    upload: bool
    attempt: int


@dataclass(frozen=True)
class JobFinished:
    pass


@dataclass(frozen=True)
class JobFailed:
    message: str


Action = Dispatch | JobFinished | JobFailed


class Status(enum.Enum):
    WAITING = "waiting"
    ACTIVE = "active"
    DONE = "done"


@dataclass
class _Instance:
    spec: InstanceSpec
    vm: str | None = None
    running_on: str | None = None
    done: bool = False
    attempts: int = 0
    failed_on: set[str] = field(default_factory=set)
    outputs: list[ObjectRef] = field(default_factory=list)


@dataclass
class _Location:
    vm: str
    remote: bool


class JobState:
    """Pure scheduling state of one job. Call :meth:`start`, then :meth:`handle` per event."""

    def __init__(self, app: App, plan: Plan, slots: Mapping[str, int], app_inputs: Sequence[ObjectRef],
                 *, max_attempts: int = 3) -> None:
        self.app = app.validate()
        self.plan = plan
        self.slots = dict(slots)
        self.alive = set(slots)
        self.app_inputs = list(app_inputs)
        self.max_attempts = max_attempts
        self.order = app.topological_order()
        self.status = {s: Status.WAITING for s in self.order}
        self.instances: dict[str, list[_Instance]] = {}
        self.locations: dict[str, _Location] = {}
        self.queues: dict[str, deque[tuple[str, int]]] = {vm: deque() for vm in slots}
        self.running: dict[str, int] = {vm: 0 for vm in slots}
        self.finished = False
        self.failed: str | None = None
        self._held: set[str] = set()          # consumer stages waiting for re-run producers
        self._blocked: list[tuple[str, int]] = []  # instances whose inputs are being regenerated

    # ------------------------------------------------------------------ public
    def start(self) -> list[Action]:
        return self._advance()

    def handle(self, event: Event) -> list[Action]:
        if self.finished or self.failed:
            return []
        if isinstance(event, InstanceFinished):
            self._on_finished(event)
        elif isinstance(event, InstanceFailed):
            failure = self._on_failed(event)
            if failure:
                return [failure]
        elif isinstance(event, VMLost):
            failure = self._on_vm_lost(event)
            if failure:
                return [failure]
        return self._advance()

    def method(self, src: str, dst: str) -> PassingMethod:
        return self.plan.edge(src, dst).method

    def stage_specs(self, stage: str) -> list[InstanceSpec]:
        return [inst.spec for inst in self.instances.get(stage, [])]

    def vm_of(self, stage: str, index: int) -> str | None:
        return self.instances[stage][index].vm

    # ------------------------------------------------------------------ events
    def _on_finished(self, ev: InstanceFinished) -> None:
        inst = self.instances[ev.stage][ev.index]
        self._release(inst, ev.vm)
        if inst.done:
            return  # a duplicate report (e.g. after a retry raced a slow success)
        inst.done = True
        inst.outputs = [ObjectRef(ev.stage, ev.index, name, size, checksum) for name, size, checksum in ev.outputs]
        for ref in inst.outputs:
            self.locations[ref.key] = _Location(ev.vm, ev.uploaded)

    def _on_failed(self, ev: InstanceFailed) -> JobFailed | None:
        inst = self.instances[ev.stage][ev.index]
        self._release(inst, ev.vm)
        inst.failed_on.add(ev.vm)
        if inst.attempts >= self.max_attempts:
            self.failed = (f"stage {ev.stage!r} instance {ev.index} failed {inst.attempts} times, "
                           f"last on VM {ev.vm}: {ev.error}")
            return JobFailed(self.failed)
        if ev.kind == "fetch":
            self._recover_inputs(inst)
        self._requeue(inst)
        return None

    def _on_vm_lost(self, ev: VMLost) -> JobFailed | None:
        if ev.vm not in self.alive:
            return None
        self.alive.discard(ev.vm)
        if not self.alive:
            self.failed = f"every VM is lost (last: {ev.vm}: {ev.reason})"
            return JobFailed(self.failed)
        for queued in list(self.queues.pop(ev.vm, ())):
            self._requeue(self.instances[queued[0]][queued[1]])
        self.running.pop(ev.vm, None)
        for stage in self.order:
            for inst in self.instances.get(stage, []):
                if inst.running_on == ev.vm:
                    inst.running_on = None
                    self._requeue(inst)
        # Objects that lived only on the lost VM are gone: forget them; producers re-run on demand.
        for key, loc in list(self.locations.items()):
            if loc.vm == ev.vm and not loc.remote:
                del self.locations[key]
        self._rerun_lost_producers()
        return None

    # ------------------------------------------------------------------ lineage
    def _rerun_lost_producers(self) -> None:
        """Mark producers whose outputs are lost and still needed as not done, and requeue them."""
        for stage in self.order:
            consumers = [e.dst for e in self.app.out_edges(stage)]
            if not consumers or all(self.status[c] is Status.DONE for c in consumers):
                continue
            for inst in self.instances.get(stage, []):
                if inst.done and any(ref.key not in self.locations for ref in inst.outputs):
                    inst.done = False
                    inst.outputs = []
                    self._requeue(inst)
                    self.status[stage] = Status.ACTIVE
                    for c in consumers:
                        if self.status[c] is Status.ACTIVE:
                            self._hold_consumers(c)

    def _hold_consumers(self, stage: str) -> None:
        """A consumer stage whose producer re-runs waits: its queued instances are withdrawn."""
        for vm, queue in self.queues.items():
            self.queues[vm] = deque(q for q in queue if q[0] != stage)
        self.status[stage] = Status.WAITING
        self._held.add(stage)

    def _recover_inputs(self, inst: _Instance) -> None:
        for ref in inst.spec.inputs:
            loc = self.locations.get(ref.key)
            if ref.stage != APP_INPUT and loc is not None and loc.vm not in self.alive and not loc.remote:
                del self.locations[ref.key]
        self._rerun_lost_producers()

    # ------------------------------------------------------------------ scheduling
    def _release(self, inst: _Instance, vm: str) -> None:
        if inst.running_on == vm:
            inst.running_on = None
            if vm in self.running:
                self.running[vm] -= 1

    def _requeue(self, inst: _Instance) -> None:
        if inst.done or inst.running_on is not None:
            return
        target = self._retry_vm(inst)
        inst.vm = target
        queue = self.queues[target]
        if (inst.spec.stage, inst.spec.index) not in queue:
            queue.appendleft((inst.spec.stage, inst.spec.index))

    def _retry_vm(self, inst: _Instance) -> str:
        candidates = sorted(self.alive - inst.failed_on) or sorted(self.alive)
        if inst.vm in candidates and inst.vm not in inst.failed_on:
            return inst.vm
        return min(candidates, key=lambda vm: (self.running[vm] + len(self.queues[vm])) / self.slots[vm])

    def _advance(self) -> list[Action]:
        progressed = True
        while progressed:
            progressed = False
            for stage in self.order:
                if self.status[stage] is Status.ACTIVE and all(i.done for i in self.instances[stage]):
                    self.status[stage] = Status.DONE
                    progressed = True
                elif self.status[stage] is Status.WAITING and self._producers_done(stage):
                    self._activate(stage)
                    progressed = True
        if all(s is Status.DONE for s in self.status.values()):
            self.finished = True
            return [JobFinished()]
        return self._dispatch()

    def _producers_done(self, stage: str) -> bool:
        return all(self.status[e.src] is Status.DONE for e in self.app.in_edges(stage))

    def _activate(self, stage: str) -> None:
        if stage in self._held and stage in self.instances:
            # Re-activation after lineage recovery: keep finished instances, requeue the rest.
            self._held.discard(stage)
            self.status[stage] = Status.ACTIVE
            for inst in self.instances[stage]:
                if not inst.done and inst.running_on is None:
                    self._requeue(inst)
            return
        produced = {e.src: [i.outputs for i in self.instances[e.src]] for e in self.app.in_edges(stage)}
        specs = route_instances(self.app, stage, produced, self.app_inputs)
        insts = [_Instance(spec) for spec in specs]
        self.instances[stage] = insts
        self.status[stage] = Status.ACTIVE
        for inst, vm in zip(insts, self._place(stage, specs)):
            inst.vm = vm
            self.queues[vm].append((stage, inst.spec.index))

    def _place(self, stage: str, specs: list[InstanceSpec]) -> list[str]:
        vm_edges = {e.src for e in self.app.in_edges(stage) if self.method(e.src, stage) is PassingMethod.VM}
        spread = self._apportion(stage, len(specs))
        placed: list[str] = []
        for spec, planned in zip(specs, spread):
            weights: dict[str, int] = {}
            for ref in spec.inputs:
                loc = self.locations.get(ref.key)
                if ref.stage in vm_edges and loc is not None and loc.vm in self.alive:
                    weights[loc.vm] = weights.get(loc.vm, 0) + ref.size
            if weights:
                placed.append(max(sorted(weights), key=lambda vm: weights[vm]))
            else:
                placed.append(planned)
        return placed

    def _apportion(self, stage: str, n: int) -> list[str]:
        """Spread n instances over alive VMs in the plan's proportions (largest remainder)."""
        planned = {vm: c for vm, c in self.plan.stages[stage].placement.items() if vm in self.alive and c > 0}
        if not planned:
            planned = {vm: 1 for vm in sorted(self.alive)}
        total = sum(planned.values())
        exact = {vm: n * c / total for vm, c in planned.items()}
        counts = {vm: int(x) for vm, x in exact.items()}
        for vm in sorted(planned, key=lambda v: (-(exact[v] - counts[v]), v))[: n - sum(counts.values())]:
            counts[vm] += 1
        out: list[str] = []
        for vm in sorted(counts):
            out.extend([vm] * counts[vm])
        return out

    def _dispatch(self) -> list[Action]:
        actions: list[Action] = []
        blocked, self._blocked = self._blocked, []
        for stage, index in blocked:
            inst = self.instances[stage][index]
            if not inst.done and inst.running_on is None and inst.vm in self.alive:
                self.queues[inst.vm].append((stage, index))
        for vm in sorted(self.alive):
            queue = self.queues[vm]
            while queue and self.running[vm] < self.slots[vm]:
                stage, index = queue.popleft()
                inst = self.instances[stage][index]
                if inst.done or inst.running_on is not None:
                    continue
                sources = self._sources(inst.spec, vm)
                if sources is None:
                    self._blocked.append((stage, index))  # an input is being regenerated
                    continue
                inst.running_on = vm
                inst.vm = vm
                inst.attempts += 1
                self.running[vm] += 1
                upload = any(self.method(stage, e.dst) is PassingMethod.REMOTE for e in self.app.out_edges(stage))
                actions.append(Dispatch(inst.spec, vm, tuple(sources), upload, inst.attempts))
        return actions

    def _sources(self, spec: InstanceSpec, vm: str) -> list[InputSource] | None:
        sources: list[InputSource] = []
        for ref in spec.inputs:
            if ref.stage == APP_INPUT:
                sources.append(InputSource(ref, "remote", None))
                continue
            loc = self.locations.get(ref.key)
            if loc is None:
                return None
            if loc.vm == vm and vm in self.alive:
                sources.append(InputSource(ref, "local", vm))
            elif self.method(ref.stage, spec.stage) is PassingMethod.REMOTE and loc.remote:
                sources.append(InputSource(ref, "remote", None))
            elif loc.vm in self.alive:
                sources.append(InputSource(ref, "direct", loc.vm))
            elif loc.remote:
                sources.append(InputSource(ref, "remote", None))
            else:
                return None
        return sources

    # ------------------------------------------------------------------ results
    def outputs(self, stage: str) -> list[tuple[ObjectRef, str]]:
        """(object, VM holding it) of every output of ``stage``."""
        return [(ref, self.locations[ref.key].vm) for inst in self.instances.get(stage, []) for ref in inst.outputs]
