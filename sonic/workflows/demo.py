"""``sonic demo``: the whole loop on an embedded loopback cluster, in a few minutes, no setup.

1. start a loopback cluster (agents + embedded S3) in a temporary directory;
2. calibrate it (small transfers) so the cost model describes this machine;
3. generate ``video`` inputs and profile the app briefly with the reference executor;
4. fit the models, predict the demo input, plan with Sonic and with the all-remote baseline;
5. run both plans on the same input, compare latency, cost, method per edge, predicted vs
   actual; tear everything down (also on errors and Ctrl-C).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from models import AppModel
from profiler import ProfileStore, profile_app
from sonic.app import load_app
from sonic.cluster.spec import load_cluster
from sonic.emulation.local import local_cluster
from sonic.inputs import generate_input
from sonic.metrics import RunResult
from sonic.plan import Plan
from sonic.runtime.calibrate import calibrate_cluster
from sonic.sizes import format_size
from sonic.workflows.planning import plan_for
from sonic.workflows.session import open_coordinator

Echo = Callable[[str], None]

DEMO_APP = "video"
DEMO_VMS = 3
PROFILE_SIZES = (4_000_000, 8_000_000, 16_000_000, 32_000_000)
DEMO_INPUT_BYTES = 48_000_000
#: S3's first-byte latency is 20-30 ms; the embedded server adds it per request so that
#: Remote-Storage pays what it pays on AWS (the embedded server itself answers in about a millisecond).
S3_LATENCY_MS = 25.0
#: Runs per strategy, interleaved; the demo compares medians (the machine is shared and noisy).
RUNS = 3


def run_demo(*, progress: bool = True, echo: Echo = print, vms: int = DEMO_VMS,
             profile_sizes: tuple[int, ...] = PROFILE_SIZES, input_bytes: int = DEMO_INPUT_BYTES,
             runs: int = RUNS) -> dict[str, Any]:
    def say(text: str) -> None:
        if progress:
            echo(text)

    t_start = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="sonic-demo-"))
    app = load_app(DEMO_APP)
    try:
        say(f"[1/5] starting a loopback cluster of {vms} VMs with an embedded S3 "
            f"({S3_LATENCY_MS:.0f} ms per request, like S3's first-byte latency) ...")
        with local_cluster(vms, "loopback", root=workdir / "cluster", s3_latency_ms=S3_LATENCY_MS):
            cluster_path = workdir / "cluster" / "cluster.yaml"
            say("[2/5] calibrating the cluster (bandwidth, latency, disk, S3, invocation) ...")
            calibrate_cluster(cluster_path, net_bytes=16_000_000, disk_bytes=16_000_000, s3_bytes=4_000_000,
                              repeats=2)
            cluster = load_cluster(cluster_path)
            say(f"[3/5] profiling {DEMO_APP} at {', '.join(format_size(s) for s in profile_sizes)} ...")
            store = ProfileStore(workdir / "state")
            profile_app(app, list(profile_sizes), 1, store=store,
                        progress=(lambda ev: say(f"      {ev.describe()}")) if progress else None)
            model = AppModel.for_app(app).fit(store.load(app.name))
            model.save(workdir / "state")
            say(f"[4/5] planning a {format_size(input_bytes)} input ...")
            input_path = generate_input(app, workdir / "demo-input.avi", input_bytes, seed=42)
            features = app.features_of(input_path) or None
            size = input_path.stat().st_size
            sonic_plan, _ = plan_for(app, size, cluster, strategy="sonic", root=workdir / "state", features=features)
            remote_plan, _ = plan_for(app, size, cluster, strategy="remote", root=workdir / "state",
                                      features=features)
            say(f"[5/5] running the Sonic plan and the all-remote baseline on the same input, {runs} runs each ...")
            coordinator = open_coordinator(cluster)
            runs_by: dict[str, list[RunResult]] = {"sonic": [], "remote": []}
            try:
                for i in range(runs):
                    for name, plan in (("sonic", sonic_plan), ("remote", remote_plan)):
                        result = coordinator.execute(app, DEMO_APP, input_path, plan)
                        runs_by[name].append(result)
                        say(f"      run {i + 1}/{runs} {name:7s} {result.latency_s:6.2f} s  output "
                            f"{'ok' if result.output_ok else 'FAILED'}")
            finally:
                coordinator.close()
        results = {name: median_run(rs) for name, rs in runs_by.items()}
        summary = summarise(results, {"sonic": sonic_plan, "remote": remote_plan}, size)
        summary["runs"] = {name: [r.latency_s for r in rs] for name, rs in runs_by.items()}
        summary["demo_seconds"] = time.perf_counter() - t_start
        if progress:
            for line in render_summary(summary):
                echo(line)
        return summary
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def median_run(results: list[RunResult]) -> RunResult:
    """The run with the median latency (all outputs must have validated)."""
    ordered = sorted(results, key=lambda r: r.latency_s)
    median = ordered[len(ordered) // 2]
    median.output_ok = all(r.output_ok for r in results)
    return median


def summarise(results: dict[str, RunResult], plans: dict[str, Plan], input_bytes: int) -> dict[str, Any]:
    sonic_r, remote_r = results["sonic"], results["remote"]
    return {
        "app": DEMO_APP,
        "input_bytes": input_bytes,
        "strategies": {
            name: {
                "latency_s": r.latency_s,
                "predicted_latency_s": plans[name].predicted.get("latency_s"),
                "cost_usd": r.cost_usd,
                "output_ok": r.output_ok,
                "edges": [{"src": e.src, "dst": e.dst, "method": e.method, "bytes": e.bytes,
                           "seconds": e.seconds} for e in r.edges],
                "stages": [{"name": s.name, "instances": s.instances, "seconds": s.seconds,
                            "peak_memory_mb": s.peak_memory_mb} for s in r.stages],
            }
            for name, r in results.items()
        },
        "speedup_vs_remote": remote_r.latency_s / sonic_r.latency_s if sonic_r.latency_s else None,
        "sonic_beats_remote": sonic_r.latency_s < remote_r.latency_s,
        "notes": plans["sonic"].notes,
    }


def render_summary(summary: dict[str, Any]) -> list[str]:
    lines = ["", f"{summary['app']} on a {format_size(summary['input_bytes'])} input (median of "
                 f"{len(next(iter(summary['runs'].values())))} runs each):"]
    lines.append(f"  {'strategy':9s} {'latency':>9s} {'predicted':>10s} {'cost $':>11s}  output  methods")
    for name, s in summary["strategies"].items():
        methods = ", ".join(f"{e['src']}->{e['dst']}:{e['method']}" for e in s["edges"])
        predicted = s["predicted_latency_s"]
        pred = f"{predicted:9.2f}s" if predicted is not None else "        -"
        lines.append(f"  {name:9s} {s['latency_s']:8.2f}s {pred} {s['cost_usd']:11.7f}  "
                     f"{'ok' if s['output_ok'] else 'FAIL':6s}  {methods}")
    lines.append(f"  Sonic vs all-remote: {summary['speedup_vs_remote']:.2f}x "
                 f"({'faster' if summary['sonic_beats_remote'] else 'NOT faster'})")
    for note in summary["notes"]:
        lines.append(f"  note: {note}")
    return lines
