"""Shared machinery of the experiments: emulated clusters, calibration, planning, runs, CSV.

Every experiment runs on a local cluster made by :func:`sonic.emulation.local.local_cluster`
(network namespaces with tbf-shaped links when we are root, loopback otherwise) and always
torn down by its context manager. Results are plain CSV under ``experiments/results/``,
figures PNG under ``experiments/figures/``; state that later experiments reuse (profiles,
fitted models, the end-to-end plans) lives under ``experiments/.state/`` (not committed).
"""

from __future__ import annotations

import csv
import math
import os
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sonic.app import App
from sonic.cluster.spec import ClusterSpec, load_cluster
from sonic.metrics import RunResult
from sonic.plan import Plan
from sonic.prediction import AppPrediction

HERE = Path(__file__).resolve().parent
MB = 1_000_000


@dataclass
class Output:
    """Where results go (``experiments/`` by default; tests point it at a temp dir)."""

    base: Path = HERE

    @property
    def results(self) -> Path:
        return self.base / "results"

    @property
    def figures(self) -> Path:
        return self.base / "figures"

    @property
    def state(self) -> Path:
        return self.base / ".state"

    @property
    def report(self) -> Path:
        return self.base / "report.md"


OUT = Output()


def set_output(base: Path) -> None:
    OUT.base = Path(base)


# ----------------------------------------------------------------------------- logging
_T0 = time.monotonic()


def log(text: str) -> None:
    """Progress on stderr with the elapsed time of the whole session."""
    elapsed = time.monotonic() - _T0
    print(f"[{int(elapsed // 60):3d}:{int(elapsed % 60):02d}] {text}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class NetSettings:
    """One emulated pool of VMs next to an emulated S3 (see report.md for the reasoning)."""

    vms: int
    cores_per_vm: int
    memory_mb_per_vm: int = 4096
    vm_mbps: float | None = 400.0          # every VM link, both directions (tbf)
    s3_mbps: float | None = 2000.0         # the S3 server's link: S3's aggregate limit (tbf)
    s3_latency_ms: float = 25.0            # added to every S3 request (first-byte latency)
    mode: str = "netns"
    vm_cpus: float | None = None           # netns: each VM's CPU limit in cores (cgroup), None: unlimited

    def limits(self) -> Any:
        from sonic.emulation.cgroups import VMLimits

        return VMLimits(cpus=self.vm_cpus, memory_mb=self.memory_mb_per_vm if self.vm_cpus else None)

    def describe(self) -> str:
        link = f"{self.vm_mbps:g} Mbit/s VM links" if self.vm_mbps else "unshaped VM links"
        s3 = f"S3 link {self.s3_mbps:g} Mbit/s" if self.s3_mbps else "unshaped S3 link"
        cpus = f" (cgroup: {self.vm_cpus:g} CPU each)" if self.vm_cpus else ""
        return (f"{self.mode}: {self.vms} VMs x {self.cores_per_vm} cores{cpus}, {self.memory_mb_per_vm} MB; {link}; "
                f"{s3}, +{self.s3_latency_ms:g} ms per S3 request")


def netns_available() -> bool:
    if os.geteuid() != 0:
        return False
    from sonic.emulation.netns import netns_unusable_reason

    return netns_unusable_reason() is None


@contextmanager
def cluster(settings: NetSettings, root: Path) -> Iterator[tuple[ClusterSpec, Path, NetSettings]]:
    """Start a local cluster (netns if possible, else loopback with in-process S3 shaping),
    yield (spec, cluster file, effective settings); always torn down."""
    from sonic.emulation.local import HarnessOptions, local_cluster

    effective = settings
    if settings.mode != "netns" and settings.vm_mbps is not None:
        effective = NetSettings(settings.vms, settings.cores_per_vm, settings.memory_mb_per_vm, None,
                                settings.s3_mbps, settings.s3_latency_ms, settings.mode)
    if settings.mode == "netns" and not netns_available():
        log("netns needs root and iproute2: falling back to a loopback cluster (VM links unshaped)")
        effective = NetSettings(settings.vms, settings.cores_per_vm, settings.memory_mb_per_vm, None,
                                settings.s3_mbps, settings.s3_latency_ms, "loopback")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {"s3_latency_ms": effective.s3_latency_ms, "s3_mbps": effective.s3_mbps,
                              "cores_per_vm": effective.cores_per_vm,
                              "memory_mb_per_vm": effective.memory_mb_per_vm}
    if effective.mode == "netns":
        kwargs["vm_mbps"] = effective.vm_mbps
        if effective.vm_cpus:
            kwargs["limits"] = effective.limits()
    t0 = time.perf_counter()
    with local_cluster(effective.vms, effective.mode, root, options=HarnessOptions(ssh_config_path=None),
                       **kwargs) as spec:
        log(f"cluster up in {time.perf_counter() - t0:.1f}s: {effective.describe()}")
        try:
            yield spec, root / "cluster.yaml", effective
        finally:
            log("tearing the cluster down")


def calibrate(cluster_file: Path, *, quick: bool) -> ClusterSpec:
    """Measure the cost-model inputs on this cluster (``sonic cluster calibrate``) and reload."""
    from sonic.runtime.calibrate import calibrate_cluster

    t0 = time.perf_counter()
    size = 16 * MB if quick else 32 * MB
    calibrate_cluster(cluster_file, net_bytes=size, disk_bytes=size, s3_bytes=(4 if quick else 8) * MB,
                      repeats=2 if quick else 3)
    spec = load_cluster(cluster_file)
    cal = spec.calibration
    log(f"calibrated in {time.perf_counter() - t0:.1f}s: VM {cal.vm_bandwidth_Bps / 1e6:.1f} MB/s, "
        f"S3 {cal.s3_latency_s * 1000:.0f} ms/req, {cal.s3_conn_Bps / 1e6:.1f} MB/s/conn, "
        f"{cal.s3_aggregate_Bps / 1e6:.1f} MB/s aggregate, disk w {cal.disk_write_Bps / 1e6:.0f} MB/s")
    return spec


def calibration_row(spec: ClusterSpec, **extra: Any) -> dict[str, Any]:
    return {**extra, **{k: v for k, v in asdict(spec.calibration).items()}}


# ----------------------------------------------------------------------------- planning
def plan(app: App, prediction: AppPrediction, spec: ClusterSpec, strategy: str,
         objective: str = "latency") -> Plan:
    """The planner exactly as ``sonic plan`` calls it, except that it is told the truth about
    warm workers: the coordinator warms every VM's pool before the clock starts
    (``Coordinator.execute(warm=True)``), so no VM pays a cold start inside the measured run.
    (``sonic.workflows.planning.plan_for`` passes no ``warm=`` and so adds one calibrated cold start
    to every prediction.)"""
    from sonic.planner import make_plan

    plan_strategy = "sonic" if strategy == "oracle" else strategy
    result = make_plan(app, prediction, spec, objective=objective, strategy=plan_strategy,
                       warm=spec.vm_names)
    result.strategy = strategy
    return result


def predict(app: App, input_bytes: int, root: Path, input_path: Path | None = None) -> AppPrediction:
    from sonic.workflows.planning import predict as predict_models

    features = app.feature_extractor(input_path) if (app.feature_extractor and input_path) else None
    return predict_models(app, input_bytes, root, features)


def edge_methods(plan_: Plan) -> str:
    return " ".join(f"{e.src}>{e.dst}:{e.method.value}" for e in plan_.edges)


def placement_text(plan_: Plan) -> str:
    return " ".join(f"{name}={'+'.join(f'{vm}:{c}' for vm, c in sorted(s.placement.items()))}"
                    for name, s in plan_.stages.items())


# ----------------------------------------------------------------------------- CSV
def write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = list(columns) if columns else _columns(rows)
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(row.get(k)) for k in cols})
    tmp.replace(path)
    return path


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    cols: dict[str, None] = {}
    for row in rows:
        for k in row:
            cols.setdefault(k, None)
    return list(cols)


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ----------------------------------------------------------------------------- stats
def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def geomean(values: Sequence[float]) -> float:
    vals = [v for v in values if v > 0 and math.isfinite(v)]
    return math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else math.nan


def perf_per_dollar(latency_s: float, cost_usd: float) -> float:
    product = latency_s * cost_usd
    return 1.0 / product if product > 0 else math.nan


@dataclass
class RunRecord:
    """One measured run, flattened for CSV."""

    fields: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, result: RunResult, plan_: Plan, **extra: Any) -> RunRecord:
        return cls({
            **extra,
            "latency_s": result.latency_s,
            "cost_usd": result.cost_usd,
            "perf_per_dollar": perf_per_dollar(result.latency_s, result.cost_usd or 0.0),
            "output_ok": result.output_ok,
            "predicted_latency_s": plan_.predicted.get("latency_s"),
            "predicted_cost_usd": plan_.predicted.get("cost_usd"),
            "methods": edge_methods(plan_),
            "placement": placement_text(plan_),
            "vms_used": len({m.vm for m in result.instances}),
            "edge_seconds": " ".join(f"{e.src}>{e.dst}:{e.seconds:.3f}" for e in result.edges),
            "output_detail": result.output_detail,
        })


def matplotlib_pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
