"""Random small planning problems (apps, predictions, clusters) for the planner's tests."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st
from planner_samples import _noop, stage_prediction

from sonic.app import App
from sonic.cluster.spec import Calibration, ClusterSpec, VMSpec
from sonic.prediction import AppPrediction, StagePrediction

MB = 1_000_000


@dataclass
class Case:
    app: App
    prediction: AppPrediction
    cluster: ClusterSpec
    warm: dict[str, int] | None
    objective: str
    strategy: str

    def describe(self) -> str:
        edges = ", ".join(f"{e.src}-{e.pattern.value}->{e.dst}" for e in self.app.edges())
        return (f"edges [{edges}] instances {[s.instances for s in self.prediction.stages.values()]} "
                f"vms {[(v.cores, v.memory_mb, v.price_per_hour) for v in self.cluster.vms]} warm {self.warm} "
                f"{self.objective}/{self.strategy}")


@st.composite
def apps(draw: st.DrawFn, max_stages: int = 5) -> tuple[App, dict[str, StagePrediction]]:
    n = draw(st.sampled_from([k for k in (1, 2, 3, 4, 4, 5, 5, 5) if k <= max_stages]))
    app = App("rand")
    # Diamonds (fork then join) make the DP keep several stages on its frontier at once.
    diamond = n >= 4 and draw(st.booleans())
    preds: dict[str, StagePrediction] = {}
    for i in range(n):
        name = f"s{i}"
        after: dict[str, str] = {}
        if i > 0:
            if diamond and i in (1, 2):
                producers = [0]             # a fork: s0 feeds s1 and s2 ...
            elif diamond and i == 3:
                producers = [1, 2]          # ... which join again in s3
            else:
                k = draw(st.integers(1, min(2, i)))
                producers = draw(st.lists(st.integers(0, i - 1), min_size=k, max_size=k, unique=True))
            kind = draw(st.sampled_from(["driving", "gather", "broadcast"]))
            for j, p in enumerate(producers):
                if kind == "driving":
                    pattern = draw(st.sampled_from(["scatter", "one-to-one"])) if j == 0 else "broadcast"
                elif kind == "gather":
                    pattern = "gather" if j == 0 else draw(st.sampled_from(["gather", "broadcast"]))
                else:
                    pattern = "broadcast"
                after[f"s{p}"] = pattern
        app.add_stage(_noop, name=name, after=after or None)
        preds[name] = stage_prediction(
            name,
            instances=draw(st.integers(1, 4)),
            time_s=draw(st.floats(0.0, 3.0)),
            memory_mb=draw(st.sampled_from([50, 50, 300, 800, 1500, 2500])),
            output_bytes=draw(st.sampled_from([0, 1 * MB, 20 * MB, 200 * MB])) * draw(st.floats(0.5, 1.5)),
            input_bytes=draw(st.sampled_from([0, 10 * MB, 100 * MB])),
            trusted=draw(st.booleans()) or draw(st.booleans()) or draw(st.booleans()),
        )
    app.validate()
    return app, preds


@st.composite
def calibrations(draw: st.DrawFn) -> Calibration:
    return Calibration(
        vm_bandwidth_Bps=draw(st.floats(20e6, 2e9)),
        vm_latency_s=draw(st.floats(0.0, 0.002)),
        disk_write_Bps=draw(st.floats(100e6, 2e9)),
        disk_read_Bps=draw(st.floats(100e6, 3e9)),
        s3_latency_s=draw(st.floats(0.001, 0.1)),
        s3_conn_Bps=draw(st.floats(10e6, 200e6)),
        s3_aggregate_Bps=draw(st.floats(50e6, 2e9)),
        invoke_overhead_s=draw(st.floats(0.0, 0.01)),
        cold_start_s=draw(st.floats(0.0, 2.0)),
    )


@st.composite
def clusters(draw: st.DrawFn, max_vms: int = 3) -> ClusterSpec:
    n = draw(st.integers(1, max_vms))
    identical = draw(st.booleans())

    def vm_spec(i: int) -> VMSpec:
        return VMSpec(f"vm{i}", f"10.213.0.{10 + i}", cores=draw(st.integers(1, 4)),
                      memory_mb=draw(st.sampled_from([2048, 4096, 8192, 16384])),
                      price_per_hour=draw(st.sampled_from([0.05, 0.096, 0.2])))

    first = vm_spec(0)
    vms = [first] + [VMSpec(f"vm{i}", f"10.213.0.{10 + i}", first.cores, first.memory_mb, first.price_per_hour)
                     if identical else vm_spec(i) for i in range(1, n)]
    calibration = draw(calibrations())
    # Compute speeds relative to the profiling machine: all as profiled, one for the pool, or
    # one per VM (a faster VM too: the search's lower bounds must hold for it).
    speeds = draw(st.sampled_from(["profiled", "pool", "per-vm"]))
    factor = st.sampled_from([0.5, 1.0, 2.0, 3.0])
    if speeds == "pool":
        calibration.compute_factor = dict.fromkeys((vm.name for vm in vms), draw(factor))
    elif speeds == "per-vm":
        calibration.compute_factor = {vm.name: draw(factor) for vm in vms}
    return ClusterSpec(vms, calibration=calibration)


@st.composite
def cases(draw: st.DrawFn, max_stages: int = 5, max_vms: int = 3) -> Case:
    app, preds = draw(apps(max_stages))
    cluster = draw(clusters(max_vms))
    warm = None
    if draw(st.booleans()):
        warm = {vm.name: draw(st.integers(0, vm.cores)) for vm in cluster.vms}
    objective = draw(st.sampled_from(["latency", "cost", "perf-per-dollar"]))
    strategy = draw(st.sampled_from(["sonic", "sonic", "sonic", "remote", "direct", "vm", "oracle"]))
    return Case(app, AppPrediction(app.name, 10 * MB, preds), cluster, warm, objective, strategy)
