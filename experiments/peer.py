"""Peer comparison (the measurement of issue 12's "Checked by"): the sort workload through
Lithops localhost, through Sonic on a loopback cluster, and as one numpy sort in one process,
on identical generated data, same machine, same run.

Systems, one run of each per round, in an order rotated every round (so that a slow spell of
the shared machine does not always hit the same system):

- ``lithops``: :mod:`experiments.lithops_sort` in a fresh subprocess (Lithops localhost
  compute + localhost storage, ``worker_processes = 2``), ``ceil(sqrt(size / 4 MB))`` mappers
  and as many reducers (8 x 8 at 256 MB, 16 x 16 at 1 GB; ``SONIC_PEER_LITHOPS_TASKS``
  overrides), since its default of one task per 4 MB would make it pay M x R = 62,500
  objects at 1 GB;
- ``sonic``: the live plan, ``plan_for(strategy="sonic")`` from the fitted sort models with the
  input's features and a mid-job re-planner, exactly as ``sonic run --strategy sonic
  --no-learn`` plans and runs it (the planner chooses the map/reduce counts);
- ``vm`` and ``direct``: Sonic's best fixed strategies, planned the same way (counts chosen by
  the planner for that method);
- ``floor``: :mod:`experiments.sort_floor`, a numpy sort of the same records in a fresh
  subprocess (read, sort by the full 10-byte key, write): the single-process compute floor.

Sonic runs on a loopback cluster of 2 VMs x 1 core (this machine's cores; Lithops gets as many
worker processes). Every clock starts with the input already in the system's storage (Lithops:
its localhost storage directory; Sonic: the embedded S3, with no added latency, since Lithops'
localhost storage has none either; the floor: a local file) and warm workers (Lithops: a no-op
job first; Sonic: ``Coordinator.execute(warm=True)``), and stops when the last output is
written; every output goes through the same ``workloads.sort`` validator, outside the clock.
Sonic plans with sort models profiled and fitted here (reused from ``.state`` if present) on
the calibrated loopback cluster.

Configuration (environment): ``SONIC_PEER_SIZES`` (e.g. ``256MB,1GB,2GB``; default 32MB, and
32MB,64MB without ``--quick``), ``SONIC_PEER_ROUNDS`` (default 3, 2 with ``--quick``),
``SONIC_PEER_LITHOPS_TASKS`` (mappers = reducers for Lithops, default as above). Lithops is
not part of the default install: ``pip install -e '.[experiments]'``.

Outputs ``results/peer.csv`` (one row per run), ``results/peer_summary.csv`` (per size and
system: median, min, max) and ``figures/peer.png``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from experiments.common import (
    HERE,
    MB,
    OUT,
    NetSettings,
    calibrate,
    cluster,
    edge_methods,
    log,
    matplotlib_pyplot,
    median,
    placement_text,
    read_csv,
    write_csv,
)
from experiments.profiling import models_root, profile_and_fit
from sonic.errors import UserInputError

NAME = "peer"
WORKERS = 2
INPUT_SEED = 202
LITHOPS_ATTEMPTS = 3
SYSTEMS = ("lithops", "sonic", "vm", "direct", "floor")
SONIC_STRATEGIES = ("sonic", "vm", "direct")
SIZES_ENV = "SONIC_PEER_SIZES"
ROUNDS_ENV = "SONIC_PEER_ROUNDS"
LITHOPS_TASKS_ENV = "SONIC_PEER_LITHOPS_TASKS"
INSTALL_HINT = "pip install -e '.[experiments]' (or: pip install 'lithops==3.8.0')"
#: Issue 12's targets: sonic >= this many times faster than Lithops, within this factor of the floor.
TARGET_SPEEDUP_VS_LITHOPS = 1.5
TARGET_FLOOR_FACTOR = 2.0
TARGET_MIN_BYTES = 1_000_000_000


def config(quick: bool) -> dict[str, Any]:
    """Sizes and rounds: the environment's if set, else the small defaults."""
    from sonic.sizes import parse_size_list

    sizes_text = os.environ.get(SIZES_ENV, "").strip()
    rounds_text = os.environ.get(ROUNDS_ENV, "").strip()
    tasks_text = os.environ.get(LITHOPS_TASKS_ENV, "").strip()
    try:
        sizes = parse_size_list(sizes_text) if sizes_text else ([32 * MB] if quick else [32 * MB, 64 * MB])
    except UserInputError as exc:
        raise UserInputError(f"{SIZES_ENV}={sizes_text!r}: {exc}") from None
    if any(s < 100 for s in sizes):
        raise UserInputError(f"{SIZES_ENV}={sizes_text!r}: every size must hold at least one 100-byte record")
    rounds = _positive_int(ROUNDS_ENV, rounds_text) if rounds_text else (2 if quick else 3)
    tasks = _positive_int(LITHOPS_TASKS_ENV, tasks_text) if tasks_text else None
    return {"sizes": sizes, "rounds": rounds, "lithops_tasks": tasks}


def _positive_int(name: str, text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise UserInputError(f"{name}={text!r} is not a positive whole number")
    return int(text)


def lithops_missing() -> str | None:
    """Why Lithops cannot run here (None: it can)."""
    if importlib.util.find_spec("lithops") is None:
        return f"the peer experiment needs Lithops, which is not installed: {INSTALL_HINT}"
    return None


def lithops_tasks(size: int) -> int:
    """Lithops' mappers (= reducers): ceil(sqrt(number of 4 MB chunks)), at least one per worker."""
    from workloads.sort import num_chunks

    return max(WORKERS, math.ceil(math.sqrt(num_chunks(size))))


def child_timeout_s(size: int) -> float:
    """Time limit of one Lithops or floor subprocess: generous, but a hung run must end."""
    return 120.0 + 0.15 * size / MB


def _input(size: int) -> Path:
    from sonic.app import load_app
    from sonic.inputs import generate_input

    folder = OUT.state / "inputs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"sort-{size}-{INPUT_SEED}.in"
    if not path.exists():
        t0 = time.perf_counter()
        partial = path.with_suffix(".partial")
        generate_input(load_app("sort"), partial, size, seed=INPUT_SEED)
        partial.replace(path)  # an interrupted generation never passes for a finished input
        log(f"generated {path.name} in {time.perf_counter() - t0:.0f}s")
    return path


def _child_env() -> dict[str, str]:
    pythonpath = os.pathsep.join(p for p in (str(HERE.parent), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": pythonpath}


def _run_child(command: list[str], env: dict[str, str], timeout_s: float) -> str:
    """Run ``command`` in its own session; kill its whole process group on timeout or on any
    interruption, so no task process of it outlives this call. Returns its stderr."""
    proc = subprocess.Popen(command, env=env, cwd=str(HERE.parent), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None or _group_alive(proc.pid):
            _kill_group(proc.pid)
            proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command[1:4])} failed (exit {proc.returncode}): {stderr[-2000:]}")
    return stderr


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return  # already gone


# ----------------------------------------------------------------------------- one run per system
def run_lithops(input_path: Path, tasks: int, workers: int = WORKERS) -> dict[str, Any]:
    """One timed Lithops sort in a fresh subprocess with a throwaway Lithops home and temp dir.
    A run that does not finish within :func:`child_timeout_s` is killed and redone (Lithops
    3.8's localhost backend sometimes never starts a queued job); attempts are counted."""
    detail = ""
    for attempt in range(1, LITHOPS_ATTEMPTS + 1):
        try:
            doc = _lithops_once(input_path, workers, tasks)
        except subprocess.TimeoutExpired:
            detail = f"no result within {child_timeout_s(input_path.stat().st_size):.0f}s, killed"
        except RuntimeError as exc:
            detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
        else:
            return {**doc["runs"][0], "attempt": attempt, "lithops_version": doc.get("lithops_version", "?")}
        log(f"  lithops attempt {attempt}: {detail}")
    return {"attempt": LITHOPS_ATTEMPTS, "latency_s": math.nan, "output_ok": False,
            "output_detail": f"every attempt failed: {detail}", "mappers": tasks, "reducers": tasks}


def _lithops_once(input_path: Path, workers: int, tasks: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="sonic-lithops-"))
    try:
        (tmp / "home").mkdir()
        (tmp / "tmp").mkdir()
        config_file = tmp / "config.yaml"
        config_file.write_text("lithops:\n  backend: localhost\n  storage: localhost\n  log_level: WARNING\n")
        env = {**_child_env(), "HOME": str(tmp / "home"), "TMPDIR": str(tmp / "tmp"),
               "LITHOPS_CONFIG_FILE": str(config_file)}
        out = tmp / "result.json"
        _run_child([sys.executable, "-m", "experiments.lithops_sort", "--input", str(input_path), "--runs", "1",
                    "--workers", str(workers), "--tasks", str(tasks), "--out", str(out)],
                   env, child_timeout_s(input_path.stat().st_size))
        if not out.exists():
            raise RuntimeError("lithops sort wrote no result")
        return dict(json.loads(out.read_text()))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_floor(input_path: Path) -> dict[str, Any]:
    """One timed numpy sort (:mod:`experiments.sort_floor`) in a fresh subprocess."""
    tmp = Path(tempfile.mkdtemp(prefix="sonic-sortfloor-"))
    try:
        out = tmp / "result.json"
        try:
            _run_child([sys.executable, "-m", "experiments.sort_floor", "--input", str(input_path),
                        "--workdir", str(tmp), "--out", str(out)], _child_env(),
                       child_timeout_s(input_path.stat().st_size))
        except (subprocess.TimeoutExpired, RuntimeError) as exc:
            return {"latency_s": math.nan, "output_ok": False, "output_detail": f"{type(exc).__name__}: {exc}"[:500]}
        return dict(json.loads(out.read_text()))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _sonic_row(result: Any, plan_: Any) -> dict[str, Any]:
    """The run report's counts, objects stored per edge and S3 requests, flattened."""
    counts = " ".join(f"{s.name}={s.instances}" for s in result.stages)
    objects = " ".join(f"{e.src}>{e.dst}:{e.objects_stored}" for e in result.edges)
    shuffle = next((e for e in result.edges if (e.src, e.dst) == ("map", "reduce")), None)
    map_instances = next((s.instances for s in result.stages if s.name == "map"), 0)
    return {"latency_s": result.latency_s, "output_ok": result.output_ok, "detail": result.output_detail,
            "predicted_latency_s": plan_.predicted.get("latency_s"), "methods": edge_methods(plan_),
            "placement": placement_text(plan_), "counts": counts, "objects_stored": objects,
            "shuffle_objects": shuffle.objects_stored if shuffle else "",
            "map_instances": map_instances,
            "s3_put": result.s3_requests.get("put", 0), "s3_get": result.s3_requests.get("get", 0),
            "replans": len(result.replans)}


# ----------------------------------------------------------------------------- the experiment
def run(quick: bool = False, cfg: dict[str, Any] | None = None) -> dict[str, Any]:
    from sonic.app import load_app
    from sonic.runtime.replan import DEFAULT_THRESHOLD
    from sonic.workflows.planning import plan_for
    from sonic.workflows.session import _replanner, open_coordinator

    cfg = {**config(quick), **(cfg or {})}
    missing = lithops_missing()
    if missing:
        raise UserInputError(missing)
    app = load_app("sort")
    settings = NetSettings(vms=WORKERS, cores_per_vm=1, vm_mbps=None, s3_mbps=None, s3_latency_ms=0.0,
                           mode="loopback")
    log(f"peer: sizes {', '.join(f'{s / MB:g} MB' for s in cfg['sizes'])}, {cfg['rounds']} rounds of "
        f"{', '.join(SYSTEMS)} (order rotated)")
    inputs = {size: _input(size) for size in cfg["sizes"]}
    root = models_root(quick)
    profile_and_fit(root, quick=quick, apps=("sort",), write=False)  # reuses a stored profile; refits
    rows: list[dict[str, Any]] = []
    with cluster(settings, OUT.state / "cluster-peer") as (spec, cluster_file, eff):
        spec = calibrate(cluster_file, quick=quick)
        setting = f"sonic {eff.mode} {eff.vms} VMs x {eff.cores_per_vm} core"
        coord = open_coordinator(spec)
        try:
            for size_index, (size, path) in enumerate(inputs.items()):
                input_bytes = path.stat().st_size
                features = app.features_of(path) or None
                plans = {}
                for strategy in SONIC_STRATEGIES:
                    t0 = time.perf_counter()
                    plan_, prediction = plan_for(app, input_bytes, spec, strategy=strategy, objective="latency",
                                                 root=root, features=features)
                    replanner = None
                    if prediction.source == "models":
                        replanner = _replanner(app, input_bytes, features, spec, plan_, prediction, strategy,
                                               "latency", root, DEFAULT_THRESHOLD)
                    plans[strategy] = (plan_, prediction, replanner)
                    log(f"plan {strategy} {size / MB:g} MB ({time.perf_counter() - t0:.1f}s): {edge_methods(plan_)}; "
                        f"counts {plan_.chosen_counts()}; predicted {plan_.predicted.get('latency_s', math.nan):.2f}s")
                tasks = cfg.get("lithops_tasks") or lithops_tasks(input_bytes)
                for round_index in range(cfg["rounds"]):
                    shift = (round_index + size_index) % len(SYSTEMS)
                    order = SYSTEMS[shift:] + SYSTEMS[:shift]
                    for position, system in enumerate(order):
                        base = {"system": system, "input_bytes": input_bytes, "round": round_index,
                                "position": position, "load_1m": os.getloadavg()[0]}
                        row = _one(system, app, coord, path, plans, tasks, setting)
                        rows.append({**base, **row})
                        log(f"{size / MB:g} MB round {round_index} {system:7s}: {row['latency_s']:.2f}s "
                            f"ok={row['output_ok']} {row.get('counts', '')} load {base['load_1m']:.1f}")
                        write_csv(OUT.results / "peer.csv", rows)
        finally:
            coord.close()
    write_csv(OUT.results / "peer_summary.csv", summary())
    figure()
    return {"rows": len(rows)}


def _one(system: str, app: Any, coord: Any, path: Path, plans: dict[str, Any], tasks: int,
         setting: str) -> dict[str, Any]:
    if system == "lithops":
        r = run_lithops(path, tasks)
        return {"latency_s": r["latency_s"], "output_ok": r["output_ok"], "detail": r["output_detail"],
                "attempt": r["attempt"], "counts": f"map={r['mappers']} reduce={r['reducers']}",
                "shuffle_objects": r["mappers"] * r["reducers"],
                "plan": f"lithops {r.get('lithops_version', '?')} localhost, {WORKERS} workers"}
    if system == "floor":
        r = run_floor(path)
        return {"latency_s": r["latency_s"], "output_ok": r["output_ok"], "detail": r["output_detail"],
                "read_s": r.get("read_s"), "sort_s": r.get("sort_s"), "write_s": r.get("write_s"),
                "plan": f"numpy {r.get('numpy_version', '?')} single process"}
    plan_, _, replanner = plans[system]
    try:
        result = coord.execute(app, "sort", path, plan_, replanner=replanner)
    except Exception as exc:  # noqa: BLE001 - a failed run is a result; the next system still runs
        return {"latency_s": math.nan, "output_ok": False, "detail": f"{type(exc).__name__}: {exc}"[:500],
                "plan": setting}
    return {**_sonic_row(result, plan_), "plan": setting}


# ----------------------------------------------------------------------------- summary
def _ok(row: dict[str, str]) -> bool:
    return row.get("output_ok") == "True"


def summary() -> list[dict[str, Any]]:
    """Per size and system: median, min and max latency of the valid runs, the most common
    counts and shuffle objects, and the ratios issue 12 checks."""
    rows = read_csv(OUT.results / "peer.csv")
    out: list[dict[str, Any]] = []
    for size in sorted({int(r["input_bytes"]) for r in rows}):
        at_size = [r for r in rows if int(r["input_bytes"]) == size]
        entry: dict[str, Any] = {"input_bytes": size}
        for system in SYSTEMS:
            mine = [r for r in at_size if r["system"] == system]
            vals = [float(r["latency_s"]) for r in mine if _ok(r)]
            entry[f"{system}_median_s"] = median(vals)
            entry[f"{system}_min_s"] = min(vals) if vals else math.nan
            entry[f"{system}_max_s"] = max(vals) if vals else math.nan
            entry[f"{system}_runs"] = len(mine)
            entry[f"{system}_valid"] = len(vals)
            entry[f"{system}_counts"] = _most_common([r.get("counts", "") for r in mine])
            entry[f"{system}_shuffle_objects"] = _most_common([r.get("shuffle_objects", "") for r in mine])
            entry[f"{system}_methods"] = _most_common([r.get("methods", "") for r in mine])
            entry[f"{system}_objects_stored"] = _most_common([r.get("objects_stored", "") for r in mine])
            entry[f"{system}_s3_requests"] = _most_common([f"{r['s3_put']} PUT / {r['s3_get']} GET"
                                                           for r in mine if r.get("s3_put", "") != ""])
        sonic_rows = [r for r in at_size if r["system"] == "sonic"]
        entry["sonic_shuffle_objects_eq_mappers"] = bool(sonic_rows) and all(
            r.get("shuffle_objects", "") != "" and r.get("shuffle_objects") == r.get("map_instances")
            for r in sonic_rows if _ok(r))
        sonic, lithops, floor = entry["sonic_median_s"], entry["lithops_median_s"], entry["floor_median_s"]
        entry["lithops_over_sonic"] = lithops / sonic if sonic > 0 else math.nan
        entry["sonic_over_floor"] = sonic / floor if floor > 0 else math.nan
        fixed = {s: entry[f"{s}_median_s"] for s in ("vm", "direct") if math.isfinite(entry[f"{s}_median_s"])}
        best = min(fixed, key=lambda s: fixed[s]) if fixed else ""
        entry["best_fixed"] = best
        entry["sonic_over_best_fixed"] = sonic / fixed[best] if best else math.nan
        entry["all_ok"] = bool(at_size) and all(_ok(r) for r in at_size)
        # The machine is shared: a reader must see how loaded it was while these ran.
        entry["load_1m_median"] = median([float(r["load_1m"]) for r in at_size if r.get("load_1m", "") != ""])
        out.append(entry)
    return out


def _most_common(values: list[str]) -> str:
    present = [v for v in values if v not in ("", None)]
    return Counter(present).most_common(1)[0][0] if present else ""


def targets() -> list[dict[str, Any]]:
    """Issue 12's checks per size >= 1 GB: sonic (live plan) >= 1.5x faster than Lithops, within
    2x of the numpy floor, and one stored object per producer instance in the shuffle."""
    out = []
    for e in summary():
        if e["input_bytes"] < TARGET_MIN_BYTES:
            continue
        out.append({"input_bytes": e["input_bytes"],
                    "vs_lithops_ok": e["lithops_over_sonic"] >= TARGET_SPEEDUP_VS_LITHOPS and e["all_ok"],
                    "vs_floor_ok": e["sonic_over_floor"] <= TARGET_FLOOR_FACTOR and e["all_ok"],
                    "objects_ok": e["sonic_shuffle_objects_eq_mappers"], **e})
    return out


# ----------------------------------------------------------------------------- figure
def figure() -> Path | None:
    rows = read_csv(OUT.results / "peer.csv")
    if not rows or "round" not in rows[0]:
        return None
    plt = matplotlib_pyplot()
    sizes = sorted({int(r["input_bytes"]) for r in rows})
    colors = {"lithops": "tab:orange", "sonic": "black", "vm": "tab:blue", "direct": "tab:green", "floor": "tab:gray"}
    width = 0.8 / len(SYSTEMS)
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, system in enumerate(SYSTEMS):
        meds, lo, hi = [], [], []
        for size in sizes:
            vals = [float(r["latency_s"]) for r in rows if r["system"] == system and int(r["input_bytes"]) == size
                    and _ok(r)]
            m = median(vals) if vals else 0.0
            meds.append(m)
            lo.append(m - min(vals) if vals else 0)
            hi.append(max(vals) - m if vals else 0)
        ax.bar([j + (i - (len(SYSTEMS) - 1) / 2) * width for j in range(len(sizes))], meds, width,
               yerr=[lo, hi], capsize=2, label=system, color=colors[system])
    ax.set_xticks(range(len(sizes)))
    ax.set_xticklabels([f"sort {s / MB:g} MB" for s in sizes])
    ax.set_ylabel("latency (s), median, min-max")
    ax.set_title("Sort: Lithops localhost (2 workers), Sonic (2 VMs x 1 core), numpy", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    OUT.figures.mkdir(parents=True, exist_ok=True)
    out = OUT.figures / "peer.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
