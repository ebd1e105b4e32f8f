"""Profile the three workloads and fit their models (the step before planning).

Profiling uses the profiler's default executor, as ``sonic profile APP`` does: the reference
executor with best-of-k timing of short instances, every instance in a forked child at
raised priority, runs interleaved over sizes. (Profiling through the cluster runtime,
:class:`sonic.workflows.cluster_profiling.ClusterExecutor`, was tried first: on this machine the emulated
VMs' instances share two cores with each other and with other jobs, so per-instance times
depend on how many instances run at once, i.e. on the input size's fanout, and on the
noise of the shared machine; the models' held-out check then rejected lightgbm's ``pca``
and ``train`` and sort's ``split``, which makes the planner send their edges through
Remote-Storage. See notes.md.) The profile (Parquet) and the fitted models live under
``.state/models-<mode>/``; ``results/models.csv`` lists every stage/metric with its form,
held-out MAPE and whether the planner trusts it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from experiments.common import MB, OUT, log, write_csv

APPS = ("sort", "video", "lightgbm")


def profile_sizes(app: str, quick: bool) -> list[int]:
    """The sweep ``sonic profile APP`` uses by default (:data:`sonic.workflows.profiling.RECOMMENDED_SIZES`:
    five doubling sizes starting where the workload's fanout has left its floor); ``--quick``
    keeps its first four."""
    from sonic.workflows.profiling import DEFAULT_SIZES, RECOMMENDED_SIZES
    from sonic.sizes import parse_size

    sizes = [parse_size(s) for s in RECOMMENDED_SIZES.get(app, DEFAULT_SIZES).split(",")]
    return sizes[:4] if quick else sizes


def profile_runs(quick: bool) -> int:
    """``sonic profile``'s default number of runs per size (2 with ``--quick``)."""
    from sonic.workflows.profiling import DEFAULT_RUNS

    return 2 if quick else DEFAULT_RUNS


def models_root(quick: bool) -> Path:
    return OUT.state / ("models-quick-v2" if quick else "models-full-v2")


def have_models(root: Path, apps: tuple[str, ...] = APPS) -> bool:
    from models.persist import model_dir

    return all(model_dir(root, app).is_dir() for app in apps)


def profile_and_fit(root: Path, *, quick: bool, apps: tuple[str, ...] = APPS, write: bool = True) -> list[dict[str, Any]]:
    """Profile every app into ``root`` (unless already profiled there) and fit + save models.
    Returns the model report rows (also written to ``results/models.csv``)."""
    from models import AppModel
    from profiler import ProfileStore, profile_app
    from sonic.app import load_app

    store = ProfileStore(root)
    rows: list[dict[str, Any]] = []
    for name in apps:
        app = load_app(name)
        if store.parts(name):
            log(f"profile of {name} already in {root}; reusing it")
        else:
            t0 = time.perf_counter()
            summary = profile_app(app, profile_sizes(name, quick), profile_runs(quick), store=store,
                                  progress=lambda ev: ev.phase == "done" and log(f"  profile {name}: {ev.describe()}"))
            log(f"profiled {name}: {summary.rows} rows, {len(summary.run_ids)} runs, "
                f"{summary.invalid_outputs} invalid, {time.perf_counter() - t0:.0f}s")
        model = AppModel.for_app(app).fit(store.load(name))
        model.save(root)
        for r in model.report():
            rows.append({"app": name, **r})
        untrusted = sorted({r["stage"] for r in model.report() if not r["trusted"]})
        if untrusted:
            log(f"  {name}: stages NOT trusted by the planner (edges fall back to remote): {', '.join(untrusted)}")
    if write:
        write_csv(OUT.results / "models.csv", rows)
    return rows
