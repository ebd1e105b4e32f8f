"""How fast each VM computes, relative to the machine that profiled the app.

The models predict a stage's time as it was measured by ``sonic profile``, on the calibrating
machine's cores. A VM that computes slower (an older CPU, a CPU quota: an emulated VM in a
``cpu.max`` cgroup of half a core, a burstable cloud instance out of credits) runs every
stage longer by about the same factor, and a plan that ignores it mispredicts every
compute-bound stage on that VM. So calibration runs one fixed CPU workload
(:func:`sonic.runtime.benchapp.burn_cpu`) here and on every VM's warm worker at once, in a
job of the real coordinator, and stores each VM's time over the time here
(``calibration.compute_factor``); the cost model multiplies the stage time on that VM by it.

Raw wall time on both sides: a CPU quota's throttling is what is being measured, and it is not
a run-queue wait the instance's own ``wall_s`` leaves out. The workload runs long enough for a
quota to bind (CFS periods are 100 ms): at least :data:`MIN_SECONDS` here, doubling its rounds
until it does, and the fastest of :data:`REPEATS` jobs counts on every side (interference on a
shared machine only ever adds time).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from sonic.app import load_app
from sonic.cluster.spec import ClusterSpec
from sonic.plan import EdgePlan, PassingMethod, Plan, StagePlan
from sonic.runtime.benchapp import burn_cpu
from sonic.runtime.coordinator import Coordinator

SPIN_APP = "sonic.runtime.benchapp:spin"
#: Seconds the workload lasts here at least: several CFS periods, so a CPU quota binds.
MIN_SECONDS = 0.5
REPEATS = 3


def local_rounds_and_seconds(min_seconds: float = MIN_SECONDS) -> tuple[int, float]:
    """Rounds of the workload lasting at least ``min_seconds`` here, and the fastest of
    :data:`REPEATS` timings of them."""
    burn_cpu(1)  # imports and first-call costs stay out of the timing
    rounds = 64
    while True:
        t0 = time.perf_counter()
        burn_cpu(rounds)
        if time.perf_counter() - t0 >= min_seconds:
            break
        rounds *= 2
    best = min(_timed(rounds) for _ in range(REPEATS))
    return rounds, best


def _timed(rounds: int) -> float:
    t0 = time.perf_counter()
    burn_cpu(rounds)
    return time.perf_counter() - t0


def compute_factors(cluster: ClusterSpec, secret: bytes) -> dict[str, float]:
    """Each VM's time for the workload over this machine's (module doc), one instance per VM,
    all VMs at once as in a busy job. VMs of one type (same cores, memory and price) get the
    median of their type: they compute alike, and what differs between their measurements is
    noise (two identical loopback VMs measured 1.38 and 1.09 on a loaded machine), which would
    otherwise split them into groups the planner must tell apart."""
    rounds, here = local_rounds_and_seconds()
    vms = [vm.name for vm in cluster.vms]
    app = load_app(SPIN_APP)
    n = len(vms)
    plan = Plan(app=app.name, input_bytes=0, objective="latency", strategy="calibration",
                stages={"deal": StagePlan(1, {vms[0]: 1}), "burn": StagePlan(n, dict.fromkeys(vms, 1))},
                edges=[EdgePlan("deal", "burn", "scatter", PassingMethod.DIRECT)])
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="sonic-calib-") as tmp:
        spec_file = Path(tmp) / "spin.txt"
        spec_file.write_text(f"{n} {rounds}")
        plan.input_bytes = spec_file.stat().st_size
        coordinator = Coordinator(cluster, secret)
        try:
            for _ in range(REPEATS):
                result = coordinator.execute(app, SPIN_APP, spec_file, plan)
                for m in result.instances:
                    if m.stage == "burn" and m.vm is not None:
                        raw = m.wall_s + m.cpu_wait_s
                        best[m.vm] = min(best.get(m.vm, raw), raw)
        finally:
            coordinator.close()
    by_type: dict[tuple[int, int, float], list[float]] = {}
    for vm in cluster.vms:
        if vm.name in best:
            by_type.setdefault((vm.cores, vm.memory_mb, vm.price_per_hour), []).append(best[vm.name] / here)
    return {vm.name: round(statistics.median(by_type[(vm.cores, vm.memory_mb, vm.price_per_hour)]), 3)
            for vm in cluster.vms if vm.name in best}
