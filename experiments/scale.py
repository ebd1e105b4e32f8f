"""Scale: several concurrent jobs of mixed apps on one cluster (Sonic's scalability
experiment, scaled down to this machine).

On the end-to-end cluster settings, for every strategy and every concurrency level J, J jobs
(cycling through sort 16 MB, video 8 MB, lightgbm 8 MB) are submitted at once, one thread and
one :class:`~sonic.runtime.coordinator.Coordinator` per job, all planned independently (the
planner does not know about the other jobs; the agents' slots queue what does not fit). The
``vm`` baseline puts job j on VM j mod N, as a SAND-style pool would spread whole jobs.
Workers of all three apps are warmed once before the first job; the clock of a job starts
when its coordinator starts driving it (its input is staged in S3 just before).

Outputs ``results/scale.csv`` (one row per job) and ``results/scale_summary.csv`` (per strategy
and J: makespan, throughput in jobs/min, median and max job latency), ``figures/scale.png``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from experiments.common import (
    MB,
    OUT,
    RunRecord,
    calibrate,
    cluster,
    log,
    matplotlib_pyplot,
    median,
    plan,
    predict,
    read_csv,
    write_csv,
)
from experiments.end_to_end import input_for, settings
from experiments.profiling import APPS, models_root, profile_and_fit

NAME = "scale"
STRATEGIES = ("sonic", "remote", "vm", "direct")
MIX = (("sort", 16 * MB), ("video", 8 * MB), ("lightgbm", 8 * MB))


def config(quick: bool) -> dict[str, Any]:
    return {"levels": [3] if quick else [1, 3, 6]}


def run(quick: bool = False, cfg: dict[str, Any] | None = None) -> dict[str, Any]:
    from sonic.app import load_app
    from sonic.workflows.session import open_coordinator

    cfg = {**config(quick), **(cfg or {})}
    rows: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    root = models_root(quick)
    profile_and_fit(root, quick=quick, write=False)  # reuses the stored profile; refits (the saved format may have changed)
    with cluster(settings(), OUT.state / "cluster-scale") as (spec, cluster_file, eff):
        spec = calibrate(cluster_file, quick=quick)
        apps = {name: load_app(name) for name in APPS}
        inputs = {name: input_for(name, size) for name, size in MIX}
        plans: dict[tuple[str, str], Any] = {}
        for name, _ in MIX:
            path = inputs[name]
            prediction = predict(apps[name], path.stat().st_size, root, path)
            for s in STRATEGIES:
                plans[(name, s)] = plan(apps[name], prediction, spec, s)
        warm = open_coordinator(spec)
        for name in APPS:
            warm.warm(name)
        warm.close()
        for level in cfg["levels"]:
            for strategy in STRATEGIES:
                jobs = [MIX[j % len(MIX)][0] for j in range(level)]
                results: list[dict[str, Any]] = [{} for _ in jobs]

                def one(j: int, name: str) -> None:
                    p = plans[(name, strategy)]
                    if strategy == "vm":
                        p = _on_vm(p, spec.vm_names[j % len(spec.vm_names)])
                    coord = open_coordinator(spec)
                    t_submit = time.perf_counter()
                    try:
                        result = coord.execute(apps[name], name, inputs[name], p, warm=False)
                        results[j] = {**RunRecord.of(result, p).fields, "ok": True,
                                      "submitted_s": t_submit - t0, "finished_s": time.perf_counter() - t0}
                    except Exception as exc:  # noqa: BLE001 - recorded as a failed job
                        results[j] = {"ok": False, "error": str(exc)[:300], "submitted_s": t_submit - t0,
                                      "finished_s": time.perf_counter() - t0}
                    finally:
                        coord.close()

                t0 = time.perf_counter()
                threads = [threading.Thread(target=one, args=(j, name)) for j, name in enumerate(jobs)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                makespan = time.perf_counter() - t0
                for j, (name, res) in enumerate(zip(jobs, results)):
                    rows.append({"strategy": strategy, "jobs": level, "job": j, "app": name, **res})
                lat = [r["latency_s"] for r in results if r.get("ok") and r.get("output_ok")]
                summary.append({"strategy": strategy, "jobs": level, "makespan_s": makespan,
                                "throughput_jobs_per_min": 60.0 * len(lat) / makespan,
                                "median_latency_s": median(lat), "max_latency_s": max(lat) if lat else float("nan"),
                                "jobs_ok": len(lat)})
                log(f"scale J={level} {strategy:6s}: makespan {makespan:.1f}s, "
                    f"{60.0 * len(lat) / makespan:.1f} jobs/min, median latency {median(lat):.2f}s, ok {len(lat)}/{level}")
                write_csv(OUT.results / "scale.csv", rows)
                write_csv(OUT.results / "scale_summary.csv", summary)
    figure()
    return {"jobs": len(rows)}


def _on_vm(p: Any, vm: str) -> Any:
    """The same SAND-style plan with every stage on ``vm`` instead."""
    from sonic.plan import Plan

    doc = p.to_json()
    for stage in doc["stages"].values():
        stage["placement"] = {vm: sum(stage["placement"].values())}
    return Plan.from_json(doc)


def figure() -> Path | None:
    rows = read_csv(OUT.results / "scale_summary.csv")
    if not rows:
        return None
    plt = matplotlib_pyplot()
    colours = {"sonic": "black", "remote": "tab:red", "vm": "tab:green", "direct": "tab:blue"}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for s in STRATEGIES:
        sub = sorted((r for r in rows if r["strategy"] == s), key=lambda r: int(r["jobs"]))
        xs = [int(r["jobs"]) for r in sub]
        axes[0].plot(xs, [float(r["throughput_jobs_per_min"]) for r in sub], marker="o", color=colours[s], label=s)
        axes[1].plot(xs, [float(r["median_latency_s"]) for r in sub], marker="o", color=colours[s], label=s)
    axes[0].set_ylabel("throughput (jobs/min)")
    axes[1].set_ylabel("median job latency (s)")
    for ax in axes:
        ax.set_xlabel("concurrent jobs (mixed sort/video/lightgbm)")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    OUT.figures.mkdir(parents=True, exist_ok=True)
    out = OUT.figures / "scale.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
