"""What an instance costs a job beyond its own work: the dispatch cycle, measured through the
real coordinator.

The cost model charges every wave of a stage ``invoke_overhead_s + local I/O + time +
object_overhead_s x objects``. A bare request/reply to a warm worker (``bench.invocation_overhead``)
misses most of what a job pays per instance: the coordinator's scheduler step, its dispatch
thread, the journal line, output registration and the reply's way back before the slot gets its
next instance. On this machine that bare round trip read 1.4 ms while instances on one busy
slot of a real job started 5-10 ms apart (the skewed example: 34 short instances on one VM,
predicted 0.44 s, measured 0.54 s). So calibration runs a job: ``benchapp.fan`` with many
instances of an almost empty stage on one VM, and takes the gap between one instance's end and
the next one's start on the same slot, less what the object overhead already counts.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from sonic.app import load_app
from sonic.cluster.spec import ClusterSpec
from sonic.plan import EdgePlan, PassingMethod, Plan, StagePlan
from sonic.runtime.coordinator import Coordinator

FAN_APP = "sonic.runtime.benchapp:fan"
#: Objects a ``touch`` instance handles that ``object_overhead_s`` already charges (1 in, 1 out).
TOUCH_OBJECTS = 2


def dispatch_gap_s(cluster: ClusterSpec, secret: bytes, *, instances_per_slot: int = 12) -> float:
    """Median seconds between an instance's end and the next start on the same slot of the
    first VM, in a job run by the real coordinator (module doc)."""
    vm = cluster.vms[0]
    slots = max(1, vm.cores)
    n = instances_per_slot * slots
    app = load_app(FAN_APP)
    plan = Plan(app=app.name, input_bytes=0, objective="latency", strategy="calibration",
                stages={"spread": StagePlan(1, {vm.name: 1}), "touch": StagePlan(n, {vm.name: n})},
                edges=[EdgePlan("spread", "touch", "scatter", PassingMethod.VM)])
    with tempfile.TemporaryDirectory(prefix="sonic-calib-") as tmp:
        count = Path(tmp) / "count.txt"
        count.write_text(str(n))
        plan.input_bytes = count.stat().st_size
        coordinator = Coordinator(cluster, secret)
        try:
            coordinator.execute(app, FAN_APP, count, plan)  # warms the workers and caches
            result = coordinator.execute(app, FAN_APP, count, plan, journal_dir=Path(tmp) / "journal")
        finally:
            coordinator.close()
    touches = sorted((m for m in result.instances if m.stage == "touch"), key=lambda m: m.started)
    # With ``slots`` instances running at once, instance i+slots takes the slot instance i left.
    gaps = [later.started - earlier.ended for earlier, later in zip(touches, touches[slots:])]
    return max(statistics.median(gaps), 0.0) if gaps else 0.0
