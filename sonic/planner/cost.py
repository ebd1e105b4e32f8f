"""The cost model: predicted seconds and dollars of a plan, from calibrated cluster parameters.

Cost model
==========

Inputs. Per stage s (per instance): ``n_s`` instances, compute time ``t_s`` (mean), memory
``m_s`` (upper bound ``memory_mb.hi``), output bytes ``o_s``, output files ``f_s`` (the
consumer count of a scatter out-edge, else 1). Per edge e = P -> C, what one consumer instance
receives: bytes ``b_e`` and objects ``k_e`` (one-to-one: ``o_P``, ``f_P``; scatter:
``n_P o_P / n_C``, ``n_P``; broadcast and gather: ``n_P o_P``, ``n_P f_P``). Per VM v: cores
``c_v``, memory ``M_v``, price ``p_v`` ($/h), warm workers ``w_v``, compute factor ``x_v``
(calibrated: the VM's time for a fixed CPU workload over the profiling machine's). Calibration: VM NIC
bandwidth ``B_net`` and request latency ``l_net``, disk write/read ``B_dw``/``B_dr``, S3
request latency ``l_s3``, per-connection ``B_conn`` and aggregate ``B_agg`` bandwidth,
invocation overhead ``o_inv``, cold start ``T_cold``. Prices: S3 PUT/GET per 1000 requests,
transfer per GB.

Execution (what the coordinator does). A stage starts when all its producers are done. A
placement ``pi_s(v)`` puts instances on VMs; each VM runs at most ``c_v`` at once, the rest
queue, so VM v runs ``W_v = ceil(pi_s(v) / c_v)`` waves of ``q_v = min(pi_s(v), c_v)``
concurrent instances. An instance fetches its inputs, runs, writes its outputs to local disk
and, when any out-edge of its stage is Remote-Storage, uploads them; all of it holds a slot.

One copy per VM. The agent keeps one copy of each fetched object per VM (``ensure_local``
caches by (job, key) under a per-key lock: concurrent instances on the VM wait for the one
fetch, later ones find the copy), for ``direct`` pulls and ``remote`` downloads alike. Edges
whose consumer instances all receive the same objects - **shared** edges: broadcast, and
gather (one consumer instance, so nothing changes) - are therefore fetched once per consumer
VM, in its first wave; one-to-one and scatter give every instance objects of its own, fetched
by every instance in every wave. Likewise every source instance receives the whole
application input, downloaded once per VM::

    T_s      = max_v ( W_v * tau_v + in_v + sum_{e shared} fetch_e(v) )
    tau_v    = o_inv + q_v (r_s / B_dr + o_s / B_dw) + x_v t_s + o_obj (f_s + sum_e k_e)
               + sum_{e not shared} fetch_e(v) + [upload] up_v
    finish_s = max( max_P finish_P , [cold_s] T_cold ) + T_s
    latency  = max over sinks of finish_s

``r_s`` is everything the instance reads from local disk (its inputs, read in place for
VM-Storage, from the fetched copy otherwise); ``q_v`` concurrent instances share the disk.
``o_obj`` (calibrated: a warm worker writing many 1 KB outputs) is the cost of one object
beyond its bytes - creating or opening the file, checksumming, registering it - paid for
each of the ``f_s`` outputs and ``k_e`` inputs of an instance, whatever the method: a
shuffle of ``M x R`` objects pays it ``2 M R`` times.
Source stages download the application input (``i_s`` bytes) once per VM of their placement,
``V_s`` VMs at once: ``in_v = l_s3 + i_s / min(B_conn, min(B_net, B_dw), B_agg / V_s)``
(``in_v = 0`` for other stages).

Memory: a placement is feasible only if the instances that run at once fit,
``min(pi_s(v), c_v) * m_s <= M_v`` on every VM it uses.

Inputs on the consumer's own VM are read in place whatever the method; ``rf_e(v)`` is the
fraction of a consumer's edge input that lives on other VMs (0 for VM-Storage, whose
consumers run where the input is: on the producer's VM for one-to-one instance by instance,
on the producer's only VM for scatter/broadcast/gather). ``s_e(v)`` is the number of streams
fetching edge e into VM v at once: ``q_v`` (one per concurrent instance), or 1 for a shared
edge (one fetch per VM; the VM's other instances wait for it).

* VM-Storage: ``fetch_e(v) = 0``; the price is paid in waves on the producer's VM(s).
* Direct-Passing (pull from the producer's agent): the bytes that really cross the
  producer's NIC are shared by all concurrent pulls. Per wave for a per-instance edge (a
  scatter pushes one share per concurrent consumer, one-to-one each instance's own output);
  once for a shared edge, which pushes one copy per consumer VM other than its own (u's
  share ``pi_P(u) / n_P`` of ``b_e``), not one per consumer instance::

      egress(u) = sum_{v != u} q_v * b_e * share_e(u, v)                     (per instance)
      egress(u) = |{v in pi_C : v != u}| * b_e * pi_P(u) / n_P              (shared)
      fetch_e(v) = l_net k_e rf_e(v) + max( s_e(v) b_e rf_e(v) / min(B_net, B_dw),
                                            max_u egress(u) / min(B_net, B_dr) )

* Remote-Storage: the producer uploads in its slot,
  ``up_v = l_s3 f_P + o_P / min(B_conn, min(B_net, B_dr) / q_v, B_agg / Q_P)`` (``Q_P``:
  the producer's concurrent instances over the cluster), and the consumer downloads
  ``fetch_e(v) = l_s3 k_e rf_e(v) + b_e rf_e(v) / min(B_conn, min(B_net, B_dw) / s_e(v),
  B_agg / Q)`` where ``Q`` is the number of streams downloading the edge at once over the
  cluster: ``sum_v s_e(v)`` over the VMs with ``rf_e(v) > 0`` - consumer instances, or
  consumer VMs for a shared edge (per-connection bandwidth, NIC share, aggregate S3 limit).

Cold starts: ``warm`` gives the warm worker processes per VM (default: none warm). The
workers a plan lacks (a VM whose concurrency ``q_v`` for some stage exceeds its warm workers
``w_v``) are started when the job starts, on all VMs in parallel; a stage that needs them
(``cold_s``: ``q_v > w_v`` on one of its VMs) cannot start before ``T_cold``. So with nothing
warm every used VM pays one cold start and the latency pays it once, at the beginning.

Dollars (what the coordinator bills, so predicted and measured cost compare): every VM used
by any stage is rented for the whole run - VMs used x latency, not busy time, because the
pool is held for the job - plus S3 requests and transfer::

    cost = sum_{v used} p_v * latency / 3600
         + PUT/1000 * (objects uploaded) + GET/1000 * (objects downloaded)
         + transfer/GB * (bytes downloaded)

Objects uploaded: ``n_P f_P`` per producer with a Remote-Storage out-edge (once, whatever the
number of such edges); ``n_P`` for a **packed** producer (every out-edge a scatter: each
instance stores its ``f_P`` files as partitions of one object, ``sonic.routing.packs_outputs``),
whose consumers still make one (ranged) GET per producer instance, ``k_e = n_P``: a remote
shuffle costs ``M`` PUTs and ``M R`` ranged GETs, not ``M R`` of each. The upload term
``up_v`` counts ``l_s3`` once per stored object likewise. Objects (bytes) downloaded per Remote edge: ``k_e rf_e(v)``
(``b_e rf_e(v)``) per consumer instance, i.e. ``sum_v pi_C(v) k_e rf_e(v)``, or once per
consumer VM for a shared edge, ``sum_v k_e rf_e(v)``; plus the application input once per VM
of each source stage (one GET and ``i_s`` bytes per VM). S3 storage-months are negligible for
intermediate data that lives seconds and are left out.

Not modelled: a copy fetched for one stage also serves another stage that needs the same
object on that VM (two consumers of one producer, or two source stages, on one VM); the model
charges each edge (each source stage) its own fetch, an upper bound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sonic.app import Pattern
from sonic.errors import PlanError
from sonic.passing import PlanMethod
from sonic.planner.methods import PLANNER_METHODS, FetchInputs
from sonic.planner.placement import Placement, PlacementSpace
from sonic.planner.problem import EdgeInfo, Problem

#: (edge, method, producer placement) feeding a consumer.
Input = tuple[EdgeInfo, PlanMethod, Placement]


@dataclass(frozen=True)
class Assignment:
    """A complete decision: a placement per stage and a method per edge (keys ``(src, dst)``)."""

    placements: Mapping[str, Placement]
    methods: Mapping[tuple[str, str], PlanMethod]


@dataclass
class Evaluation:
    """The cost model's verdict on an :class:`Assignment`."""

    latency_s: float
    cost_usd: float
    vm_usd: float
    s3_usd: float
    start: dict[str, float] = field(default_factory=dict)
    finish: dict[str, float] = field(default_factory=dict)
    stage_s: dict[str, float] = field(default_factory=dict)
    uploads: dict[str, bool] = field(default_factory=dict)
    vms_used: tuple[str, ...] = ()
    cold_vms: tuple[str, ...] = ()


#: Patterns whose consumer instances all receive the same objects (every producer file). The
#: agent keeps one copy of a fetched object per VM, so a VM fetches them once (gather has a
#: single consumer instance: the same either way). One-to-one and scatter give every consumer
#: instance objects of its own.
SHARED = frozenset({Pattern.BROADCAST, Pattern.GATHER})

_ALIGNED, _SPLIT, _SHARED = 0, 1, 2

#: ``(W_v, base_v, up_v, in_v)`` per VM of a placement (see :meth:`CostModel.stage_terms`).
_StageTerms = tuple[tuple[int, ...], tuple[float, ...], tuple[float, ...], tuple[float, ...]]


def _kind(edge: EdgeInfo) -> int:
    """How an edge routes: one-to-one (aligned), scatter (split), broadcast/gather (shared)."""
    if edge.pattern is Pattern.ONE_TO_ONE:
        return _ALIGNED
    return _SHARED if edge.pattern in SHARED else _SPLIT


@dataclass(frozen=True)
class _Flow:
    """How one edge's bytes are laid out between a producer and a consumer placement."""

    remote_fraction: tuple[float, ...]   # per consumer VM (aligned with consumer items)
    max_egress: float                    # the busiest producer NIC, in consumer inputs: per wave, or
                                         # once for a shared edge (one copy per consumer VM)
    transfer_slots: int                  # transfers at once over the cluster (Q): consumer
                                         # instances, or consumer VMs for a shared edge


class CostModel:
    """The equations of the module docstring, memoised per placement (pure, no I/O)."""

    def __init__(self, problem: Problem, space: PlacementSpace) -> None:
        self.problem = problem
        self.space = space
        cal = problem.calibration
        self.cal = cal
        self.cores = tuple(vm.cores for vm in problem.vms)
        self.compute = tuple(vm.compute_factor for vm in problem.vms)
        self._net_in = min(cal.vm_bandwidth_Bps, cal.disk_write_Bps)
        self._net_out = min(cal.vm_bandwidth_Bps, cal.disk_read_Bps)
        self._flows: dict[tuple[int, int, int], _Flow] = {}
        # Keyed by what the fetch depends on (not the edge), so equal edges share the result.
        self._fetch: dict[tuple[int, float, float, PlanMethod, int, int], tuple[float, ...]] = {}
        self._stage: dict[tuple[str, int], _StageTerms] = {}
        self._fits: dict[tuple[str, int], bool] = {}
        self._cold: dict[tuple[str, int], tuple[int, ...]] = {}
        self._dollars: dict[tuple[int, PlanMethod, int, int], float] = {}

    # ------------------------------------------------------------------ feasibility
    def fits(self, stage: str, p: Placement) -> bool:
        """Concurrent instances of ``stage`` fit in memory on every VM of ``p``."""
        key = (stage, p.id)
        found = self._fits.get(key)
        if found is None:
            mem = self.problem.stages[stage].memory_mb
            vms = self.problem.vms
            found = all(min(c, vms[v].cores) * mem <= vms[v].memory_mb for v, c in p.items)
            self._fits[key] = found
        return found

    def cold_vms(self, stage: str, p: Placement) -> tuple[int, ...]:
        """VMs of ``p`` that need more workers for ``stage`` than they have warm."""
        key = (stage, p.id)
        found = self._cold.get(key)
        if found is None:
            vms = self.problem.vms
            found = tuple(v for v, c in p.items if min(c, vms[v].cores) > vms[v].warm_workers)
            self._cold[key] = found
        return found

    # ------------------------------------------------------------------ per-VM terms
    def stage_terms(self, stage: str, p: Placement) -> _StageTerms:
        """``(W_v, base_v, up_v, in_v)`` per VM of ``p``: waves, instance time without fetches,
        upload time and the once-per-VM download of the application input (source stages);
        ``base_v = o_inv + q_v (r/B_dr + o/B_dw) + t``."""
        key = (stage, p.id)
        found = self._stage.get(key)
        if found is not None:
            return found
        s = self.problem.stages[stage]
        cal = self.cal
        waves: list[int] = []
        base: list[float] = []
        up: list[float] = []
        once: list[float] = []
        total_q = sum(min(c, self.cores[v]) for v, c in p.items)
        source = not self.problem.in_edges[stage]
        # Objects the instance writes and reads (in place or from its fetched copies): each
        # costs a file, a checksum and a registration beyond its bytes.
        objects = s.files_per_instance + sum(e.objects_per_consumer for e in self.problem.in_edges[stage])
        # Every source instance receives the whole application input: one download per VM.
        in_rate = min(cal.s3_conn_Bps, self._net_in, cal.s3_aggregate_Bps / len(p.items))
        for v, c in p.items:
            q = min(c, self.cores[v])
            waves.append(-(-c // self.cores[v]))
            once.append(cal.s3_latency_s + s.source_input_bytes / in_rate if source else 0.0)
            local = q * (s.read_bytes / cal.disk_read_Bps + s.output_bytes / cal.disk_write_Bps)
            base.append(cal.invoke_overhead_s + local + s.time_s * self.compute[v] + cal.object_overhead_s * objects)
            rate_up = min(cal.s3_conn_Bps, self._net_out / q, cal.s3_aggregate_Bps / total_q)
            up.append(cal.s3_latency_s * s.objects_stored + s.output_bytes / rate_up)
        found = (tuple(waves), tuple(base), tuple(up), tuple(once))
        self._stage[key] = found
        return found

    def flow(self, edge: EdgeInfo, pp: Placement, pc: Placement) -> _Flow:
        """Remote fractions per consumer VM, the busiest producer NIC (per consumer byte) and
        the transfers at once over the cluster (shared by every edge with the same routing
        and placements)."""
        kind = _kind(edge)
        key = (kind, pp.id, pc.id)
        found = self._flows.get(key)
        if found is not None:
            return found
        cores = self.cores
        q = {v: min(c, cores[v]) for v, c in pc.items}
        if kind == _ALIGNED:
            overlap = self._overlaps(pp, pc)
            pcc = dict(pc.items)
            rf = tuple(1.0 - overlap.get((v, v), 0) / c for v, c in pc.items)
            egress: dict[int, float] = {}
            for (u, v), ov in overlap.items():
                if u != v:
                    egress[u] = egress.get(u, 0.0) + q[v] * ov / pcc[v]
            transfer_slots = sum(q[v] for (v, _), r in zip(pc.items, rf) if r > 0)
        else:
            n_p = pp.instances
            ppc = dict(pp.items)
            rf = tuple(1.0 - ppc.get(v, 0) / n_p for v, _ in pc.items)
            if kind == _SHARED:
                # One copy per consumer VM: u's share goes to every consumer VM but u itself.
                vms = len(pc.items)
                egress = {u: (vms - (1 if u in q else 0)) * c / n_p for u, c in pp.items}
                transfer_slots = sum(1 for r in rf if r > 0)
            else:
                all_q = sum(q.values())
                egress = {u: (all_q - q.get(u, 0)) * c / n_p for u, c in pp.items}
                transfer_slots = sum(q[v] for (v, _), r in zip(pc.items, rf) if r > 0)
        found = _Flow(rf, max(egress.values(), default=0.0), transfer_slots)
        self._flows[key] = found
        return found

    def _overlaps(self, pp: Placement, pc: Placement) -> dict[tuple[int, int], int]:
        """Instances i with producer instance i on u and consumer instance i on v, per (u, v)."""
        order = self.space.instance_order

        def intervals(p: Placement) -> list[tuple[int, int, int]]:
            out, start = [], 0
            for v in order:
                c = p.counts[v]
                if c:
                    out.append((start, start + c, v))
                    start += c
            return out

        a, b = intervals(pp), intervals(pc)
        result: dict[tuple[int, int], int] = {}
        i = j = 0
        while i < len(a) and j < len(b):
            lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
            if hi > lo:
                result[(a[i][2], b[j][2])] = result.get((a[i][2], b[j][2]), 0) + hi - lo
            if a[i][1] <= b[j][1]:
                i += 1
            else:
                j += 1
        return result

    def fetch(self, edge: EdgeInfo, method: PlanMethod, pp: Placement,
              pc: Placement) -> tuple[float, ...]:
        """Seconds each VM of ``pc`` spends fetching ``edge``'s input: per wave (every instance
        fetches its own objects) or, for a shared edge, once (the VM's first wave). The
        method's own term is its hook's (``sonic.planner.methods``)."""
        kind = _kind(edge)
        key = (kind, edge.bytes_per_consumer, edge.objects_per_consumer, method, pp.id, pc.id)
        found = self._fetch.get(key)
        if found is not None:
            return found
        hooks = PLANNER_METHODS.get(method)
        if hooks.in_place:
            found = tuple(0.0 for _ in pc.items)
        else:
            fl = self.flow(edge, pp, pc)
            inputs = FetchInputs(self.cal, self._net_in, self._net_out, edge.bytes_per_consumer,
                                 edge.objects_per_consumer, fl.max_egress, fl.transfer_slots)
            cores = self.cores
            shared = kind == _SHARED
            seen: dict[tuple[int, float], float] = {}   # VMs with equal streams and share
            out: list[float] = []
            for (v, c), rf in zip(pc.items, fl.remote_fraction):
                if rf <= 0.0:
                    out.append(0.0)
                    continue
                # Streams into this VM at once: one per concurrent instance, one if shared.
                q = 1 if shared else (c if c < cores[v] else cores[v])
                value = seen.get((q, rf))
                if value is None:
                    value = seen[(q, rf)] = hooks.vm_seconds(inputs, q, rf)
                out.append(value)
            found = tuple(out)
        self._fetch[key] = found
        return found

    # ------------------------------------------------------------------ stage totals
    def stage_seconds(self, stage: str, p: Placement, inputs: Sequence[Input]) -> tuple[float, float]:
        """``T_s`` without and with the upload:
        ``max_v W_v (base_v + sum_{per-wave e} fetch_e(v) [+ up_v]) + in_v + sum_{shared e} fetch_e(v)``."""
        waves, base, up, once = self.stage_terms(stage, p)
        per_wave = list(base)
        first = list(once)
        for e, m, pp in inputs:
            acc = first if e.pattern in SHARED else per_wave   # shared: once per VM, first wave
            for i, f in enumerate(self.fetch(e, m, pp, p)):
                acc[i] += f
        plain = max(w * t + o for w, t, o in zip(waves, per_wave, first))
        with_upload = max(w * (t + u) + o for w, t, u, o in zip(waves, per_wave, up, first))
        return plain, with_upload

    def stage_time(self, stage: str, p: Placement, inputs: Sequence[Input], upload: bool) -> float:
        """``T_s`` (see :meth:`stage_seconds`)."""
        return self.stage_seconds(stage, p, inputs)[1 if upload else 0]

    def upload_dollars(self, stage: str) -> float:
        s = self.problem.stages[stage]
        return s.instances * s.objects_stored * self.problem.prices.s3_put_per_1000 / 1000.0

    def source_dollars(self, stage: str, p: Placement) -> float:
        """GET and transfer of the application input, once per VM of a source stage's ``p``."""
        if self.problem.in_edges[stage]:
            return 0.0
        s = self.problem.stages[stage]
        prices = self.problem.prices
        return len(p.items) * (prices.s3_get_per_1000 / 1000.0
                               + s.source_input_bytes / 1e9 * prices.s3_transfer_per_gb)

    def download_dollars(self, edge: EdgeInfo, method: PlanMethod, pp: Placement,
                         pc: Placement) -> float:
        """Requests and transfer of one edge at its method's prices (Remote-Storage's GETs; 0
        for a free method): per consumer instance, or per consumer VM for a shared edge."""
        unit = PLANNER_METHODS.get(method).download_prices(self.problem.prices)
        if unit is None:
            return 0.0
        per_1000, per_gb = unit
        key = (edge.index, method, pp.id, pc.id)
        found = self._dollars.get(key)
        if found is None:
            fl = self.flow(edge, pp, pc)
            if edge.pattern in SHARED:
                copies = sum(fl.remote_fraction)
            else:
                copies = sum(c * rf for (_, c), rf in zip(pc.items, fl.remote_fraction))
            found = (copies * edge.objects_per_consumer * per_1000 / 1000.0
                     + copies * edge.bytes_per_consumer / 1e9 * per_gb)
            self._dollars[key] = found
        return found

    def price_per_hour(self, vms: Sequence[int]) -> float:
        return sum(self.problem.vms[v].price_per_hour for v in vms)

    # ------------------------------------------------------------------ whole plans
    def evaluate(self, assignment: Assignment) -> Evaluation:
        """Latency and dollars of a complete assignment, stage by stage in topological order.

        Raises :class:`PlanError` if the assignment breaks a rule of the model (a VM-Storage
        consumer not on its input's VM, a placement that does not fit in memory).
        """
        problem = self.problem
        vm_names = [vm.name for vm in problem.vms]
        start: dict[str, float] = {}
        finish: dict[str, float] = {}
        stage_s: dict[str, float] = {}
        uploads: dict[str, bool] = {}
        used: set[int] = set()
        cold: set[int] = set()
        s3 = 0.0
        for name in problem.order:
            p = assignment.placements[name]
            if p.instances != problem.stages[name].instances:
                raise PlanError(f"stage {name!r}: placement holds {p.instances} instances, "
                                f"the prediction {problem.stages[name].instances}")
            if not self.fits(name, p):
                raise PlanError(f"stage {name!r}: placement {p} exceeds a VM's memory")
            inputs: list[Input] = []
            for e in problem.in_edges[name]:
                method = assignment.methods[(e.src, e.dst)]
                pp = assignment.placements[e.src]
                if (PLANNER_METHODS.get(method).in_place
                        and self.space.follow(e.pattern, pp, p.instances) is not p):
                    raise PlanError(f"edge {e.src} -> {e.dst} uses {method.value} but {name!r} is not on the VM(s) "
                                    "holding its input")
                inputs.append((e, method, pp))
                s3 += self.download_dollars(e, method, pp, p)
            upload = any(PLANNER_METHODS.get(assignment.methods[(e.src, e.dst)]).needs_upload
                         for e in problem.out_edges[name])
            uploads[name] = upload
            if upload:
                s3 += self.upload_dollars(name)
            s3 += self.source_dollars(name, p)
            stage_cold = self.cold_vms(name, p)
            cold.update(stage_cold)
            used.update(p.vms)
            ready = [finish[e.src] for e in problem.in_edges[name]]
            if stage_cold:
                ready.append(self.cal.cold_start_s)
            start[name] = max(ready, default=0.0)
            stage_s[name] = self.stage_time(name, p, inputs, upload)
            finish[name] = start[name] + stage_s[name]
        latency = max(finish[s] for s in problem.sinks)
        vm_usd = self.price_per_hour(sorted(used)) * latency / 3600.0
        return Evaluation(latency, vm_usd + s3, vm_usd, s3, start, finish, stage_s, uploads,
                          tuple(vm_names[v] for v in sorted(used)), tuple(vm_names[v] for v in sorted(cold)))


def objective_value(objective: str, latency_s: float, cost_usd: float) -> float:
    """The quantity minimised: latency, dollars, or latency x dollars (= 1 / perf-per-dollar)."""
    if objective == "latency":
        return latency_s
    if objective == "cost":
        return cost_usd
    if objective == "perf-per-dollar":
        return latency_s * cost_usd
    raise PlanError(f"objective {objective!r} is not one of latency, cost, perf-per-dollar")


def perf_per_dollar(latency_s: float, cost_usd: float) -> float:
    product = latency_s * cost_usd
    return math.inf if product <= 0 else 1.0 / product
