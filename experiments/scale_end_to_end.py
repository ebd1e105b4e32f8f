"""Scale end to end: sort at 256 MB and 1 GB on 4 CPU-isolated emulated VMs (issue 14).

The end-to-end experiment's procedure (:mod:`experiments.end_to_end`: profile and fit, plan
``sonic`` and the fixed baselines ``remote``, ``vm`` and ``direct`` with the same planner, run
them interleaved with the order rotating every round, ``oracle`` planned from the first
``remote`` run's measurements) on a pool that is not oversubscribed: ``vms`` netns VMs whose
agents and workers run in cgroups of ``vm_cpus`` cores each (4 x 0.5 = this machine's 2
cores), shaped VM links and the file-backed embedded S3 behind its shaped link. The compute
floor (:mod:`experiments.sort_floor`: one numpy process sorting the same records) is measured
in the same session, between rounds.

    python -m experiments run --only scale_end_to_end
    SONIC_SCALE_SIZES=2GB SONIC_SCALE_VMS=8 SONIC_SCALE_VM_CPUS=0.25 python -m experiments run --only scale_end_to_end
    SONIC_SCALE_SIZES=video:64MB,lightgbm:128MB python -m experiments run --only scale_end_to_end

The environment variables override the sort sizes, the VM count and each VM's CPU limit of
the full grid (a second pool or size is a separate session: results of one session are
written per cell, so keep each session's ``--out``).

Outputs ``results/scale_end_to_end.csv`` (one row per run, the end-to-end columns),
``results/scale_end_to_end_stages.csv``, ``results/scale_end_to_end_summary.csv`` (per cell:
medians, min-max, sonic against the best fixed strategy, speed-ups, the floor, $ per GB at the
cluster file's list prices) and
``results/scale_end_to_end_floor.csv``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from experiments import end_to_end
from experiments.common import (
    MB,
    OUT,
    NetSettings,
    calibrate,
    calibration_row,
    cluster,
    log,
    median,
    read_csv,
    write_csv,
)
from experiments.profiling import profile_and_fit
from sonic.sizes import parse_size

NAME = "scale_end_to_end"
GB = 1000 * MB


def settings(vms: int = 4, vm_cpus: float = 0.5) -> NetSettings:
    """``vms`` VMs of ``vm_cpus`` cores each (one slot: the cgroup is what it computes on),
    1 Gbit/s VM links, S3 behind a 2 Gbit/s link with 25 ms per request."""
    return NetSettings(vms=vms, cores_per_vm=1, memory_mb_per_vm=4096, vm_mbps=1000.0, s3_mbps=2000.0,
                       s3_latency_ms=25.0, vm_cpus=vm_cpus)


def config(quick: bool) -> dict[str, Any]:
    if quick:
        return {"sizes": {"sort": [256 * MB]}, "runs": 1, "vms": 4, "vm_cpus": 0.5}
    cfg: dict[str, Any] = {"sizes": {"sort": [256 * MB, 1 * GB]}, "runs": 3, "vms": 4, "vm_cpus": 0.5}
    if os.environ.get("SONIC_SCALE_SIZES"):
        cfg["sizes"] = parse_sizes(os.environ["SONIC_SCALE_SIZES"])
    if os.environ.get("SONIC_SCALE_VMS"):
        cfg["vms"] = int(os.environ["SONIC_SCALE_VMS"])
    if os.environ.get("SONIC_SCALE_VM_CPUS"):
        cfg["vm_cpus"] = float(os.environ["SONIC_SCALE_VM_CPUS"])
    return cfg


def parse_sizes(text: str) -> dict[str, list[int]]:
    """``2GB`` (sort) or ``sort:1GB,video:64MB,lightgbm:128MB``: input sizes per app."""
    sizes: dict[str, list[int]] = {}
    for token in (t.strip() for t in text.split(",")):
        if token:
            app, _, size = token.rpartition(":")
            sizes.setdefault(app or "sort", []).append(parse_size(size))
    return sizes


def run(quick: bool = False, cfg: dict[str, Any] | None = None) -> dict[str, Any]:
    from sonic.workflows.session import open_coordinator

    cfg = {**config(quick), **(cfg or {})}
    root = OUT.state / "models-scale"
    profile_and_fit(root, quick=quick, apps=tuple(cfg["sizes"]), write=False)
    rows: list[dict[str, Any]] = []
    stage_rows: list[dict[str, Any]] = []
    floor_rows: list[dict[str, Any]] = []
    with cluster(settings(cfg["vms"], cfg["vm_cpus"]), OUT.state / "cluster-scale") as (spec, cluster_file, eff):
        spec = calibrate(cluster_file, quick=quick)
        write_csv(OUT.results / f"{NAME}_calibration.csv", [calibration_row(spec, experiment=NAME,
                                                                            settings=eff.describe())])
        coord = open_coordinator(spec)
        try:
            for app_name, sizes in cfg["sizes"].items():
                for size in sizes:
                    r, s, _ = end_to_end._cell(coord, spec, app_name, size, cfg["runs"], root)
                    rows += r
                    stage_rows += s
                    if app_name == "sort":
                        floor_rows += [_floor(end_to_end.input_for(app_name, size), k) for k in range(cfg["runs"])]
                    write_csv(OUT.results / f"{NAME}.csv", rows, end_to_end.COLUMNS)
                    write_csv(OUT.results / f"{NAME}_stages.csv", stage_rows)
                    write_csv(OUT.results / f"{NAME}_floor.csv", floor_rows)
        finally:
            coord.close()
    summary = summary_rows()
    write_csv(OUT.results / f"{NAME}_summary.csv", summary)
    return {"runs": len(rows), "cells": len(summary)}


def _floor(path: Path, k: int) -> dict[str, Any]:
    """One numpy sort of the same records in a fresh process (no warm heap or cache of another)."""
    work = OUT.state / "floor"
    work.mkdir(parents=True, exist_ok=True)
    out = work / "result.json"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run([sys.executable, "-m", "experiments.sort_floor", "--input", str(path), "--workdir", str(work),
                    "--out", str(out)], check=True, env=env, timeout=3600)
    result = json.loads(out.read_text())
    log(f"  floor {path.stat().st_size / MB:g} MB run {k}: {result['latency_s']:.2f}s ok={result['output_ok']}")
    return {"input_bytes": path.stat().st_size, "run": k, **result}


def summary_rows() -> list[dict[str, Any]]:
    """The end-to-end summary of these runs, with the floor of the same inputs next to it."""
    out = end_to_end.summary_rows(OUT.results / f"{NAME}.csv")
    floors = read_csv(OUT.results / f"{NAME}_floor.csv")
    runs = read_csv(OUT.results / f"{NAME}.csv")
    for row in out:
        ok = [float(f["latency_s"]) for f in floors
              if int(f["input_bytes"]) == int(row["input_bytes"]) and f.get("output_ok") == "True"]
        row["floor_s"] = median(ok)
        row["sonic_vs_floor"] = row["sonic_latency_s"] / row["floor_s"] if ok else float("nan")
        gb = int(row["input_bytes"]) / GB
        for strategy in end_to_end.STRATEGIES:
            costs = [float(r["cost_usd"]) for r in runs if r["strategy"] == strategy
                     and int(r["input_bytes"]) == int(row["input_bytes"]) and r.get("output_ok") == "True"
                     and r.get("cost_usd") not in ("", None)]
            row[f"{strategy}_usd_per_gb"] = median(costs) / gb if costs else float("nan")
    return out
