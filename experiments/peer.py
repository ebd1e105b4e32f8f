"""Peer comparison: the sort app through Lithops (localhost compute + localhost storage)
beside Sonic on a loopback cluster, on identical generated data, same machine, same run.

Both get the same parallelism: Lithops ``worker_processes = 2`` (this machine's cores) and a
Sonic loopback cluster of 2 VMs x 1 core. Both clocks start with the input already in their
storage (Lithops: its localhost storage directory; Sonic: the embedded S3, with no added
latency, since Lithops' localhost storage has none either) and warm workers, and stop when
the last reducer is done; both outputs go through the same ``workloads.sort`` validator.
Sonic plans with the sort models fitted by the end-to-end experiment (profiled now if they
are missing) on the calibrated loopback cluster.

Outputs ``results/peer.csv`` (one row per run and system) and ``figures/peer.png``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from experiments.common import (
    HERE,
    MB,
    OUT,
    NetSettings,
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
from experiments.profiling import models_root, profile_and_fit

NAME = "peer"
WORKERS = 2
INPUT_SEED = 202
LITHOPS_TIMEOUT_S = 120
LITHOPS_ATTEMPTS = 3


def config(quick: bool) -> dict[str, Any]:
    return {"sizes": [32 * MB] if quick else [32 * MB, 64 * MB], "runs": 2 if quick else 3}


def _input(size: int) -> Path:
    from sonic.app import load_app
    from sonic.inputs import generate_input

    folder = OUT.state / "inputs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"sort-{size}-{INPUT_SEED}.in"
    if not path.exists():
        generate_input(load_app("sort"), path, size, seed=INPUT_SEED)
    return path


def run_lithops(input_path: Path, runs: int, workers: int = WORKERS) -> dict[str, Any]:
    """Run :mod:`experiments.lithops_sort` once per run, each in a fresh subprocess with a
    throwaway Lithops home and temp dir. A run that does not finish within
    ``LITHOPS_TIMEOUT_S`` is killed and redone (Lithops 3.8's localhost backend sometimes
    never starts a queued job); such attempts are counted in the result."""
    runs_out: list[dict[str, Any]] = []
    doc: dict[str, Any] = {}
    for run_index in range(runs):
        for attempt in range(1, LITHOPS_ATTEMPTS + 1):
            try:
                doc = _lithops_once(input_path, workers)
            except subprocess.TimeoutExpired:
                log(f"lithops run {run_index} attempt {attempt}: no result within {LITHOPS_TIMEOUT_S}s, killed")
                continue
            runs_out.append({**doc["runs"][0], "run": run_index, "attempt": attempt})
            break
        else:
            runs_out.append({"run": run_index, "attempt": LITHOPS_ATTEMPTS, "latency_s": float("nan"),
                             "output_ok": False, "output_detail": "every attempt hung", "mappers": 0, "reducers": 0})
    return {**doc, "runs": runs_out}


def _lithops_once(input_path: Path, workers: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="sonic-lithops-"))
    try:
        (tmp / "home").mkdir()
        (tmp / "tmp").mkdir()
        config = tmp / "config.yaml"
        config.write_text("lithops:\n  backend: localhost\n  storage: localhost\n  log_level: WARNING\n")
        env = {**os.environ, "HOME": str(tmp / "home"), "TMPDIR": str(tmp / "tmp"),
               "LITHOPS_CONFIG_FILE": str(config),
               "PYTHONPATH": os.pathsep.join(p for p in (str(HERE.parent), os.environ.get("PYTHONPATH", "")) if p)}
        out = tmp / "result.json"
        # Its own session, so a timeout kills Lithops' task processes along with it.
        proc = subprocess.Popen([sys.executable, "-m", "experiments.lithops_sort", "--input", str(input_path),
                                 "--runs", "1", "--workers", str(workers), "--out", str(out)],
                                env=env, cwd=str(HERE.parent), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        try:
            _, stderr = proc.communicate(timeout=LITHOPS_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"lithops sort failed (exit {proc.returncode}): {stderr[-2000:]}")
        return dict(json.loads(out.read_text()))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(quick: bool = False, cfg: dict[str, Any] | None = None) -> dict[str, Any]:
    from sonic.app import load_app
    from sonic.workflows.session import open_coordinator

    cfg = {**config(quick), **(cfg or {})}
    rows: list[dict[str, Any]] = []
    app = load_app("sort")
    settings = NetSettings(vms=WORKERS, cores_per_vm=1, vm_mbps=None, s3_mbps=None, s3_latency_ms=0.0,
                           mode="loopback")
    inputs = {size: _input(size) for size in cfg["sizes"]}
    for size, path in inputs.items():
        t0 = time.perf_counter()
        doc = run_lithops(path, cfg["runs"])
        for r in doc["runs"]:
            rows.append({"system": "lithops", "input_bytes": path.stat().st_size, "run": r["run"],
                         "attempt": r["attempt"], "latency_s": r["latency_s"], "output_ok": r["output_ok"],
                         "detail": r["output_detail"],
                         "plan": f"lithops {doc.get('lithops_version', '?')} localhost, {WORKERS} workers, "
                                 f"{r['mappers']} mappers x {r['reducers']} reducers"})
        log(f"lithops sort {size / MB:g} MB: " + " ".join(f"{r['latency_s']:.2f}s (attempt {r['attempt']})"
                                                           for r in doc["runs"])
            + f" [{time.perf_counter() - t0:.0f}s wall]")
        write_csv(OUT.results / "peer.csv", rows)
    root = models_root(quick)
    profile_and_fit(root, quick=quick, apps=("sort",), write=False)  # reuses the stored profile; refits
    with cluster(settings, OUT.state / "cluster-peer") as (spec, cluster_file, eff):
        spec = calibrate(cluster_file, quick=quick)
        coord = open_coordinator(spec)
        try:
            for size, path in inputs.items():
                prediction = predict(app, path.stat().st_size, root, path)
                p = plan(app, prediction, spec, "sonic")
                for r in range(cfg["runs"]):
                    result = coord.execute(app, "sort", path, p)
                    rec = RunRecord.of(result, p, system="sonic", input_bytes=result.input_bytes, run=r)
                    rows.append({**rec.fields, "detail": result.output_detail,
                                 "plan": f"sonic {eff.mode} {eff.vms} VMs x {eff.cores_per_vm} core: {rec.fields['methods']}"})
                    log(f"sonic sort {size / MB:g} MB run {r}: {result.latency_s:.2f}s ok={result.output_ok} "
                        f"({rec.fields['methods']})")
                write_csv(OUT.results / "peer.csv", rows)
        finally:
            coord.close()
    figure()
    return {"rows": len(rows)}


def summary() -> list[dict[str, Any]]:
    rows = read_csv(OUT.results / "peer.csv")
    out = []
    for size in sorted({int(r["input_bytes"]) for r in rows}):
        med = {}
        for system in ("sonic", "lithops"):
            vals = [float(r["latency_s"]) for r in rows if r["system"] == system and int(r["input_bytes"]) == size
                    and r["output_ok"] == "True"]
            med[system] = median(vals)
        out.append({"input_bytes": size, "sonic_median_s": med["sonic"], "lithops_median_s": med["lithops"],
                    "speedup": med["lithops"] / med["sonic"],
                    "all_ok": all(r["output_ok"] == "True" for r in rows if int(r["input_bytes"]) == size)})
    return out


def figure() -> Path | None:
    rows = read_csv(OUT.results / "peer.csv")
    if not rows:
        return None
    plt = matplotlib_pyplot()
    sizes = sorted({int(r["input_bytes"]) for r in rows})
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for i, system in enumerate(("sonic", "lithops")):
        meds, lo, hi = [], [], []
        for size in sizes:
            vals = [float(r["latency_s"]) for r in rows if r["system"] == system and int(r["input_bytes"]) == size]
            m = median(vals)
            meds.append(m if vals else 0)
            lo.append(m - min(vals) if vals else 0)
            hi.append(max(vals) - m if vals else 0)
        ax.bar([j + (i - 0.5) * 0.4 for j in range(len(sizes))], meds, 0.4, yerr=[lo, hi], capsize=3,
               label=system, color="black" if system == "sonic" else "tab:orange")
    ax.set_xticks(range(len(sizes)))
    ax.set_xticklabels([f"sort {s / MB:g} MB" for s in sizes])
    ax.set_ylabel("latency (s), median, min-max")
    ax.set_title("Sonic (loopback, 2 VMs x 1 core) vs Lithops localhost (2 workers)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    OUT.figures.mkdir(parents=True, exist_ok=True)
    out = OUT.figures / "peer.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
