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
- Packed outputs: an instance of a stage whose out-edges are all scatter, at least one of them
  Remote-Storage, stores its outputs as one object (partitions + index) and reports each partition; routing, locations and lineage
  stay per partition (its logical key), fetches read the partition's range of the pack.
- Failures: only the failed instance is retried, up to ``max_attempts`` failures, then the
  job fails naming stage, instance, VM and error. A function failure (exception, OOM kill,
  timeout) or a full local disk retries on another VM; a bad input (``fetch`` failure whose
  ``cause`` is ``corrupt`` or ``missing``) forgets that object and re-runs its producer; an
  unreachable source that turned out to be a lost VM does not count against the consumer.
- Lost VMs: their running and queued instances are re-queued elsewhere (not counted as
  failures), every object that lived only there is forgotten, and events still arriving
  from them are ignored.
- Lineage: whenever objects are forgotten, every finished instance with a forgotten output
  that is still needed (by an unfinished consumer instance, a consumer stage not routed yet,
  or as a final output) is re-run from its inputs, on another VM where possible (so a
  re-run never rewrites files a running consumer may be reading in place); this repeats up
  the DAG until every needed input is either present or being regenerated. Consumers whose
  inputs are being regenerated wait (they are not dispatched).
- A job that can make no progress (nothing running, nothing dispatchable) fails with the
  instances it waits for, rather than hanging.
- Re-planning: when a stage is done for the first time, and before any consumer is routed,
  a ``replanner`` (if given) sees what it measured and the instance counts of the consumers
  it now determines (:class:`StageObservation`); a plan it returns replaces the edges and
  placement of every stage not started yet. Started stages keep theirs (an upload already
  decided stays; a changed edge whose object was not uploaded falls back to ``direct``).
"""

from __future__ import annotations

import dataclasses
import enum
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from sonic.app import APP_INPUT, App
from sonic.errors import PlanError
from sonic.passing import PlanMethod
from sonic.plan import Plan
from sonic.routing import InstanceSpec, ObjectRef, packs_outputs, route_instances
from sonic.runtime.methods import RUNTIME_METHODS, Held


# ---------------------------------------------------------------------------- events
@dataclass(frozen=True)
class InstanceFinished:
    stage: str
    index: int
    vm: str
    outputs: tuple[tuple[str, int, str], ...]  # (name, size, checksum)
    uploaded: bool
    metrics: Mapping[str, Any] = field(default_factory=dict)
    #: Outputs stored as partitions of a packed object: name -> (pack name, offset); their
    #: ``outputs`` entry carries the partition's own size and checksum.
    ranges: Mapping[str, tuple[str, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class InstanceFailed:
    stage: str
    index: int
    vm: str
    error: str
    kind: str = "instance"   # "instance": the function failed; "fetch": an input could not be had
    cause: str = ""          # fetch only: "corrupt" | "missing" | "unreachable" | "local"
    input_key: str | None = None   # fetch only: the object that could not be had
    source_vm: str | None = None   # fetch only: the VM it was fetched from (None: S3)


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
    pack: bool = False     # store the instance's outputs as one packed object (routing.packs_outputs)


@dataclass(frozen=True)
class JobFinished:
    pass


@dataclass(frozen=True)
class JobFailed:
    message: str


Action = Dispatch | JobFinished | JobFailed


@dataclass(frozen=True)
class StageObservation:
    """What a stage measured when it finished, for mid-job re-planning."""

    stage: str
    instances: int
    output_bytes: int                     # all instances together
    wall_s: float                         # mean per instance
    memory_mb: float                      # largest instance peak
    input_bytes: float                    # mean per instance
    consumer_instances: Mapping[str, int]  # consumers now routable -> their instance count


Replanner = Callable[[StageObservation], Plan | None]


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
    attempts: int = 0                 # dispatches (reported as Dispatch.attempt)
    failures: int = 0                 # failures counted against max_attempts
    failed_on: set[str] = field(default_factory=set)
    outputs: list[ObjectRef] = field(default_factory=list)
    metrics: Mapping[str, Any] = field(default_factory=dict)   # of the attempt that succeeded


@dataclass
class _Location:
    vm: str
    remote: bool
    ref: ObjectRef                    # size and checksum of the copy that exists now


class _Unsatisfiable(Exception):
    """A consumer needs an object its (finished) producer no longer makes."""


class JobState:
    """Pure scheduling state of one job. Call :meth:`start`, then :meth:`handle` per event."""

    def __init__(self, app: App, plan: Plan, slots: Mapping[str, int], app_inputs: Sequence[ObjectRef],
                 *, max_attempts: int = 3, replanner: Replanner | None = None, pack_outputs: bool = True) -> None:
        """``pack_outputs``: stages whose out-edges are all scatter store one packed object per
        instance and their consumers read partitions by range (:func:`sonic.routing.packs_outputs`)."""
        self.app = app.validate()
        # A plan may name a method the planner knows; running it needs the runtime's side too.
        unrunnable = sorted({e.method.value for e in plan.edges if RUNTIME_METHODS.ident(e.method.value) is None})
        if unrunnable:
            raise PlanError(f"plan uses passing method(s) {', '.join(unrunnable)} that this runtime cannot run "
                            f"(registered: {', '.join(m.name for m in RUNTIME_METHODS.methods())}); register the "
                            "method's runtime side or re-plan")
        self.pack_outputs = pack_outputs
        self.replanner = replanner
        self._observed: set[str] = set()
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
        self._blocked: list[tuple[str, int]] = []  # instances whose inputs are being regenerated

    # ------------------------------------------------------------------ public
    def start(self) -> list[Action]:
        return self._advance()

    def handle(self, event: Event) -> list[Action]:
        if self.finished or self.failed:
            return []
        if isinstance(event, (InstanceFinished, InstanceFailed)) and event.vm not in self.alive:
            return []  # a late report from a VM already declared lost: its work was re-queued
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

    def method(self, src: str, dst: str) -> PlanMethod:
        return self.plan.edge(src, dst).method

    def stage_specs(self, stage: str) -> list[InstanceSpec]:
        return [inst.spec for inst in self.instances.get(stage, [])]

    # ------------------------------------------------------------------ events
    def _on_finished(self, ev: InstanceFinished) -> None:
        inst = self.instances[ev.stage][ev.index]
        self._release(inst, ev.vm)
        if inst.done:
            return  # a duplicate report (e.g. after a retry raced a slow success)
        inst.done = True
        inst.metrics = ev.metrics
        inst.outputs = [ObjectRef(ev.stage, ev.index, name, size, checksum, *ev.ranges.get(name, ("", 0)))
                        for name, size, checksum in ev.outputs]
        for ref in inst.outputs:
            self.locations[ref.key] = _Location(ev.vm, ev.uploaded, ref)

    def _on_failed(self, ev: InstanceFailed) -> JobFailed | None:
        inst = self.instances[ev.stage][ev.index]
        self._release(inst, ev.vm)
        if inst.done:
            return None  # a stale duplicate: another attempt already succeeded
        # A source VM that was lost is not the consumer's fault (the loss re-runs the producer).
        source_lost = ev.kind == "fetch" and ev.cause == "unreachable" and ev.source_vm is not None \
            and ev.source_vm not in self.alive
        if not source_lost:
            inst.failures += 1
        if ev.kind != "fetch" or ev.cause == "local":
            inst.failed_on.add(ev.vm)   # the function or this VM's disk failed: try elsewhere
        if inst.failures >= self.max_attempts:
            times = "once" if inst.failures == 1 else f"{inst.failures} times"
            self.failed = f"stage {ev.stage!r} instance {ev.index} failed {times}, last on VM {ev.vm}: {ev.error}"
            return JobFailed(self.failed)
        if ev.kind == "fetch":
            if ev.input_key and ev.cause in ("corrupt", "missing"):
                self._forget(ev.input_key)      # never consume it: regenerate it from its producer
            elif not ev.input_key:
                self._recover_inputs(inst)      # no detail: suspect inputs on lost VMs
        self._requeue(inst)
        self._rerun_lost_producers()
        return None

    def _on_vm_lost(self, ev: VMLost) -> JobFailed | None:
        if ev.vm not in self.alive:
            return None
        self.alive.discard(ev.vm)
        if not self.alive:
            self.failed = f"every VM is lost (last: {ev.vm}: {ev.reason})"
            return JobFailed(self.failed)
        queued = list(self.queues.pop(ev.vm, ()))
        self.running.pop(ev.vm, None)
        for stage in self.order:
            for inst in self.instances.get(stage, []):
                if inst.running_on == ev.vm:
                    inst.running_on = None   # not a failure of the instance: not counted
                    queued.append((stage, inst.spec.index))
        for stage, index in queued:
            self._requeue(self.instances[stage][index])
        # Objects that lived only on the lost VM are gone: forget them; producers re-run on demand.
        for key, loc in list(self.locations.items()):
            if loc.vm == ev.vm and not loc.remote:
                del self.locations[key]
        self._rerun_lost_producers()
        return None

    # ------------------------------------------------------------------ lineage
    def _forget(self, key: str) -> None:
        """Drop one object (found corrupt or missing); an app input cannot be regenerated."""
        if not key.startswith(APP_INPUT + "/"):
            self.locations.pop(key, None)

    def _needed(self, stage: str, inst: _Instance) -> bool:
        """Will anything still read an output of this finished instance?"""
        edges = self.app.out_edges(stage)
        if not edges:
            return True  # a final output: the job's result is collected from it
        keys = {ref.key for ref in inst.outputs}
        for e in edges:
            consumers = self.instances.get(e.dst)
            if consumers is None:
                return True  # not routed yet: routing will hand out every output
            if any(not c.done and any(ref.key in keys for ref in c.spec.inputs) for c in consumers):
                return True
        return False

    def _rerun_lost_producers(self) -> None:
        """Re-open finished instances that lost a needed output, until a fixpoint: re-opening
        one makes its own inputs needed again, which may re-open its producers in turn."""
        changed = True
        while changed:
            changed = False
            for stage in self.order:
                for inst in self.instances.get(stage, []):
                    if not inst.done or all(ref.key in self.locations for ref in inst.outputs):
                        continue
                    if not self._needed(stage, inst):
                        continue
                    # Its surviving outputs are withdrawn too: the re-run replaces them all, and
                    # no consumer should start on a copy that is about to be superseded.
                    for ref in inst.outputs:
                        self.locations.pop(ref.key, None)
                    inst.done = False
                    inst.outputs = []
                    self._requeue(inst, avoid={inst.vm} if inst.vm else set())
                    self.status[stage] = Status.ACTIVE
                    changed = True

    def _recover_inputs(self, inst: _Instance) -> None:
        for ref in inst.spec.inputs:
            loc = self.locations.get(ref.key)
            if ref.stage != APP_INPUT and loc is not None and loc.vm not in self.alive and not loc.remote:
                del self.locations[ref.key]

    # ------------------------------------------------------------------ scheduling
    def _release(self, inst: _Instance, vm: str) -> None:
        if inst.running_on == vm:
            inst.running_on = None
            if vm in self.running:
                self.running[vm] -= 1

    def _requeue(self, inst: _Instance, avoid: AbstractSet[str] = frozenset()) -> None:
        if inst.done or inst.running_on is not None:
            return
        item = (inst.spec.stage, inst.spec.index)
        for vm, queue in self.queues.items():
            if item in queue:
                self.queues[vm] = deque(q for q in queue if q != item)
        target = self._retry_vm(inst, avoid)
        inst.vm = target
        self.queues[target].appendleft(item)

    def _retry_vm(self, inst: _Instance, avoid: AbstractSet[str] = frozenset()) -> str:
        """Where to run an instance again: not where it failed (nor in ``avoid``) if any other
        VM is alive; its previous VM if still fine; else the least loaded."""
        candidates = (sorted(self.alive - inst.failed_on - avoid) or sorted(self.alive - inst.failed_on)
                      or sorted(self.alive))
        if inst.vm in candidates:
            return inst.vm
        return min(candidates, key=lambda vm: (self.running[vm] + len(self.queues[vm])) / self.slots[vm])

    def _advance(self) -> list[Action]:
        progressed = True
        while progressed:
            progressed = False
            for stage in self.order:
                if self.status[stage] is Status.ACTIVE and all(i.done for i in self.instances[stage]):
                    self.status[stage] = Status.DONE
                    self._observe(stage)
                    progressed = True
                elif self.status[stage] is Status.WAITING and self._producers_done(stage):
                    self._activate(stage)
                    progressed = True
        if all(s is Status.DONE for s in self.status.values()):
            self.finished = True
            return [JobFinished()]
        try:
            actions = self._dispatch()
        except _Unsatisfiable as exc:
            self.failed = str(exc)
            return [JobFailed(self.failed)]
        if not actions and not any(self.running.values()):
            self.failed = self._stall_report()
            return [JobFailed(self.failed)]
        return actions

    def _stall_report(self) -> str:
        waiting = [f"stage {stage!r} instance {index}" for stage, index in self._blocked[:3]]
        missing = sorted({ref.key for stage, index in self._blocked
                          for ref in self.instances[stage][index].spec.inputs
                          if ref.stage != APP_INPUT and ref.key not in self.locations})
        return ("the job cannot make progress: nothing runs and "
                + (f"{', '.join(waiting)} wait for inputs that no VM holds ({', '.join(missing[:5])})"
                   if waiting else "nothing is left to dispatch")
                + f"; alive VMs: {', '.join(sorted(self.alive))}")

    def _observe(self, stage: str) -> None:
        """Offer a stage's first completion to the replanner; adopt the plan it returns."""
        if self.replanner is None or stage in self._observed:
            return
        self._observed.add(stage)
        insts = self.instances[stage]
        consumers: dict[str, int] = {}
        for e in self.app.out_edges(stage):
            if self.status[e.dst] is Status.WAITING and self._producers_done(e.dst) and e.dst not in consumers:
                consumers[e.dst] = len(route_instances(self.app, e.dst, self._produced(e.dst), self.app_inputs))
        n = max(len(insts), 1)
        observation = StageObservation(
            stage=stage, instances=len(insts), output_bytes=sum(r.size for i in insts for r in i.outputs),
            wall_s=sum(float(i.metrics.get("wall_s", 0.0)) for i in insts) / n,
            memory_mb=max((float(i.metrics.get("peak_memory_mb", 0.0)) for i in insts), default=0.0),
            input_bytes=sum(i.spec.input_bytes for i in insts) / n, consumer_instances=consumers)
        new = self.replanner(observation)
        if new is not None:
            self._adopt(new)

    def _adopt(self, new: Plan) -> None:
        """Take ``new``'s placement and in-edges for every stage that has not started."""
        waiting = {s for s in self.order if self.status[s] is Status.WAITING}
        stages = {s: (new.stages[s] if s in waiting else p) for s, p in self.plan.stages.items()}
        for s in waiting:  # an elastic stage keeps its chosen count if the new plan has the same
            old = self.plan.stages[s].parallelism
            if old is not None and stages[s].parallelism is None and stages[s].instances == old.chosen:
                stages[s] = dataclasses.replace(stages[s], parallelism=old)
        edges = [new.edge(e.src, e.dst) if e.dst in waiting else e for e in self.plan.edges]
        self.plan = dataclasses.replace(self.plan, stages=stages, edges=edges)

    def _produced(self, stage: str) -> dict[str, list[list[ObjectRef]]]:
        return {e.src: [i.outputs for i in self.instances[e.src]] for e in self.app.in_edges(stage)}

    def _producers_done(self, stage: str) -> bool:
        return all(self.status[e.src] is Status.DONE for e in self.app.in_edges(stage))

    def _activate(self, stage: str) -> None:
        # The plan's chosen counts of elastic consumers reach this stage's instances.
        specs = route_instances(self.app, stage, self._produced(stage), self.app_inputs, self.plan.chosen_counts())
        insts = [_Instance(spec) for spec in specs]
        self.instances[stage] = insts
        self.status[stage] = Status.ACTIVE
        for inst, vm in zip(insts, self._place(stage, specs)):
            inst.vm = vm
            self.queues[vm].append((stage, inst.spec.index))

    def _place(self, stage: str, specs: list[InstanceSpec]) -> list[str]:
        # Consumers of an edge read in place go where their inputs are (VM-Storage, or any
        # registered method with ``in_place``).
        vm_edges = {e.src for e in self.app.in_edges(stage) if RUNTIME_METHODS.get(self.method(e.src, stage)).in_place}
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
            if inst.done or inst.running_on is not None:
                continue
            if inst.vm in self.alive:
                if (stage, index) not in self.queues[inst.vm]:
                    self.queues[inst.vm].append((stage, index))
            else:
                self._requeue(inst)  # its VM was lost while it waited
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
                upload = any(RUNTIME_METHODS.get(self.method(stage, e.dst)).needs_remote for e in self.app.out_edges(stage))
                # Packing saves S3 requests (M PUTs instead of M x R); it saves no request of a
                # Direct or VM-Storage edge (one pull or read per partition either way) and costs
                # a copy per partition read on the pack's VM, so only Remote-Storage packs
                # (docs/architecture.md has the measurements).
                pack = self.pack_outputs and upload and packs_outputs(self.app, stage)
                actions.append(Dispatch(inst.spec, vm, tuple(sources), upload, inst.attempts, pack))
        return actions

    def _sources(self, spec: InstanceSpec, vm: str) -> list[InputSource] | None:
        sources: list[InputSource] = []
        for ref in spec.inputs:
            if ref.stage == APP_INPUT:
                sources.append(InputSource(ref, "remote", None))
                continue
            loc = self.locations.get(ref.key)
            if loc is None:
                if self.instances[ref.stage][ref.instance].done:
                    raise _Unsatisfiable(
                        f"stage {spec.stage!r} instance {spec.index} needs {ref.key}, which stage {ref.stage!r} "
                        f"instance {ref.instance} no longer produces after being re-run; stage functions must be "
                        "deterministic (same inputs, same output names)"
                    )
                return None
            ref = loc.ref  # the copy that exists now (a re-run producer may have rewritten it)
            # The edge's planned method chooses (sonic.runtime.methods, "Passing methods").
            hooks = RUNTIME_METHODS.get(self.method(ref.stage, spec.stage))
            chosen = hooks.choose_source(Held(loc.vm, loc.remote), vm, self.alive)
            if chosen is None:
                return None
            sources.append(InputSource(ref, chosen[0], chosen[1]))
        return sources

    # ------------------------------------------------------------------ results
    def outputs(self, stage: str) -> list[tuple[ObjectRef, str]]:
        """(object, VM holding it) of every output of ``stage``."""
        return [(ref, self.locations[ref.key].vm) for inst in self.instances.get(stage, []) for ref in inst.outputs]
