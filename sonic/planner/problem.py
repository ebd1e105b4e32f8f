"""The planning problem: an App, its predicted parameters and a cluster, normalised into records.

Everything the cost model and the optimiser read comes from here, so predictions are checked
once: every stage has a prediction, instance counts obey the edge patterns (one-to-one copies
the producer's count, gather has one consumer), the calibration is physically meaningful, and
no stage needs more memory per instance than the largest VM has.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from sonic.app import App, Pattern
from sonic.cluster.spec import Calibration, ClusterSpec, Prices
from sonic.errors import InfeasibleError, PlanError
from sonic.prediction import AppPrediction
from sonic.routing import packs_outputs

#: ``warm`` argument of the planner: VM name -> warm worker processes of this app on that VM,
#: or a collection of VM names whose pool is fully warm (one worker per core).
WarmSpec = Mapping[str, int] | Collection[str] | None


@dataclass(frozen=True)
class VMInfo:
    """One VM as the cost model sees it (cluster order is kept)."""

    name: str
    cores: int
    memory_mb: int
    price_per_hour: float
    warm_workers: int
    compute_factor: float = 1.0  # stage time there over the profiled time (calibration)


@dataclass(frozen=True)
class StageInfo:
    """Per-instance predicted parameters of one stage (means for time/bytes, ``hi`` for memory)."""

    name: str
    instances: int
    time_s: float
    memory_mb: float
    output_bytes: float
    source_input_bytes: float   # app input fetched from remote storage (source stages only)
    read_bytes: float           # bytes an instance reads from local disk (all its inputs)
    files_per_instance: int     # output files per instance (objects uploaded per instance)
    trusted: bool
    untrusted_reason: str = ""
    #: Its files are stored as one packed object per instance (partitions read by range).
    packed: bool = False

    @property
    def objects_stored(self) -> int:
        """Objects one instance stores (and uploads for Remote-Storage): its packed object, or
        one per output file."""
        return 1 if self.packed else self.files_per_instance


@dataclass(frozen=True)
class EdgeInfo:
    """An edge with the bytes and objects each consumer instance receives over it."""

    index: int
    src: str
    dst: str
    pattern: Pattern
    bytes_per_consumer: float
    objects_per_consumer: float


@dataclass(frozen=True)
class Problem:
    app: str
    input_bytes: int
    order: tuple[str, ...]                      # topological
    stages: Mapping[str, StageInfo]
    edges: tuple[EdgeInfo, ...]
    in_edges: Mapping[str, tuple[EdgeInfo, ...]]
    out_edges: Mapping[str, tuple[EdgeInfo, ...]]
    vms: tuple[VMInfo, ...]
    calibration: Calibration
    prices: Prices
    notes: tuple[str, ...] = ()

    @property
    def sinks(self) -> tuple[str, ...]:
        return tuple(s for s in self.order if not self.out_edges[s])


def build_problem(app: App, prediction: AppPrediction, cluster: ClusterSpec, warm: WarmSpec = None, *,
                  pack_outputs: bool = True) -> Problem:
    """Normalise ``app`` + ``prediction`` + ``cluster`` into a :class:`Problem`.

    ``pack_outputs`` mirrors the runtime (``JobState``): a stage whose out-edges are all scatter
    stores one packed object per instance (:func:`sonic.routing.packs_outputs`).

    Raises :class:`PlanError` for predictions that do not fit the app or a calibration that
    cannot be used, and :class:`InfeasibleError` for a stage whose instance fits no VM.
    """
    app.validate()
    order = tuple(app.topological_order())
    missing = [s for s in order if s not in prediction.stages]
    if missing:
        raise PlanError(f"prediction has no entry for stage {missing[0]!r} of app {app.name!r}; "
                        "profile the app again (`sonic profile`)")
    _check_calibration(cluster.calibration)
    vms = _vm_infos(cluster, warm)
    notes: list[str] = []

    # Instance counts: the prediction decides, patterns constrain (one-to-one copies the
    # producer, gather has exactly one consumer) so placements can be aligned.
    counts: dict[str, int] = {}
    for name in order:
        n = max(1, int(prediction.stages[name].instances))
        for e in app.in_edges(name):
            if e.pattern is Pattern.ONE_TO_ONE and n != counts[e.src]:
                notes.append(f"stage {name!r}: predicted {n} instances but one-to-one from {e.src!r} "
                             f"gives {counts[e.src]}; using {counts[e.src]}")
                n = counts[e.src]
            elif e.pattern is Pattern.GATHER:
                n = 1
        counts[name] = n

    files: dict[str, int] = {}
    for name in order:
        scatter_fanouts = [counts[e.dst] for e in app.out_edges(name) if e.pattern is Pattern.SCATTER]
        # A scatter producer writes one file per consumer name; otherwise one output object.
        files[name] = max(scatter_fanouts, default=1)

    edges: list[EdgeInfo] = []
    for i, e in enumerate(app.edges()):
        p = prediction.stages[e.src]
        n_p, n_c, f_p = counts[e.src], counts[e.dst], files[e.src]
        out = max(0.0, p.output_bytes.mean)
        if e.pattern is Pattern.ONE_TO_ONE:
            nbytes, objects = out, float(f_p)
        elif e.pattern is Pattern.SCATTER:
            nbytes, objects = n_p * out / n_c, float(n_p)
        else:  # broadcast and gather: every producer file reaches the consumer
            nbytes, objects = n_p * out, float(n_p * f_p)
        edges.append(EdgeInfo(i, e.src, e.dst, e.pattern, nbytes, objects))
    in_edges = {s: tuple(e for e in edges if e.dst == s) for s in order}
    out_edges = {s: tuple(e for e in edges if e.src == s) for s in order}

    stages: dict[str, StageInfo] = {}
    biggest = max(vms, key=lambda v: v.memory_mb)
    for name in order:
        p = prediction.stages[name]
        mem = max(0.0, p.memory_mb.hi)
        if mem > biggest.memory_mb:
            raise InfeasibleError(
                f"stage {name!r} needs {mem:.0f} MB per instance (predicted memory, upper bound) but the "
                f"largest VM ({biggest.name}) has {biggest.memory_mb} MB; add a VM with at least "
                f"{math.ceil(mem)} MB or plan a smaller input")
        source_in = max(0.0, p.input_bytes) if not in_edges[name] else 0.0
        read = source_in + sum(e.bytes_per_consumer for e in in_edges[name])
        stages[name] = StageInfo(name, counts[name], max(0.0, p.time_s.mean), mem, max(0.0, p.output_bytes.mean),
                                 source_in, read, files[name], bool(p.trusted), p.untrusted_reason,
                                 packed=pack_outputs and packs_outputs(app, name))
    return Problem(app.name, int(prediction.input_bytes), order, stages, tuple(edges), in_edges, out_edges,
                   vms, cluster.calibration, cluster.prices, tuple(notes))


def _vm_infos(cluster: ClusterSpec, warm: WarmSpec) -> tuple[VMInfo, ...]:
    names = {vm.name for vm in cluster.vms}
    if warm is None:
        warm_map: dict[str, int] = {}
    elif isinstance(warm, Mapping):
        warm_map = {str(k): int(v) for k, v in warm.items()}
    else:
        warm_map = {str(name): cluster.vm(str(name)).cores for name in warm}
    unknown = sorted(set(warm_map) - names)
    if unknown:
        raise PlanError(f"warm names VM {unknown[0]!r}, which the cluster does not have ({', '.join(sorted(names))})")
    factors = cluster.calibration.compute_factor
    return tuple(VMInfo(vm.name, vm.cores, vm.memory_mb, vm.price_per_hour, max(0, warm_map.get(vm.name, 0)),
                        factors.get(vm.name, 1.0))
                 for vm in cluster.vms)


def _check_calibration(cal: Calibration) -> None:
    positive = ("vm_bandwidth_Bps", "disk_write_Bps", "disk_read_Bps", "s3_conn_Bps", "s3_aggregate_Bps")
    for key in positive:
        if not getattr(cal, key) > 0:
            raise PlanError(f"calibration.{key} must be positive, got {getattr(cal, key)!r}; "
                            "re-run `sonic cluster calibrate`")
    for key in ("vm_latency_s", "s3_latency_s", "invoke_overhead_s", "cold_start_s"):
        if getattr(cal, key) < 0:
            raise PlanError(f"calibration.{key} must not be negative, got {getattr(cal, key)!r}")
