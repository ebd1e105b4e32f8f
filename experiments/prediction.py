"""Prediction quality: model error vs number of profiling runs, and predicted vs measured
end-to-end latency of the executed plans.

No cluster needed: it reads the profile collected by :mod:`experiments.profiling` and the
end-to-end results.

1. For k = 1 .. R (R profiling runs per size), refit every app's models on the first k runs
   of each size and record (a) the models' own held-out MAPE (train on the sizes up to half
   the largest, predict the larger ones; ``AppModel.report``) per metric, and (b) the error
   of their predictions at the end-to-end input sizes against what the end-to-end runs
   measured (per stage: instance count, median instance time, output bytes, peak memory;
   measured values are the medians over the ``remote`` runs, whose placement is the
   profiler's), as a plain mean of per-stage errors (MAPE) and weighted by the measured
   value (WAPE = sum |error| / sum measured: a 1 ms stage then counts for what it costs).
   Also how many stages the planner would trust.
2. For every executed plan, the planner's predicted latency next to the measured one.

Outputs ``results/prediction_models.csv``, ``results/prediction_latency.csv`` and two figures.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from experiments.common import OUT, log, matplotlib_pyplot, median, read_csv, write_csv
from experiments.profiling import APPS, models_root

NAME = "prediction"
METRIC_COLUMNS = {"time": ("time_s", "mean_wall_s"), "output_bytes": ("output_bytes", "mean_output_bytes"),
                  "memory": ("memory_mb", "peak_memory_mb"), "fanout": ("instances", "instances")}


def run(quick: bool = False, cfg: dict[str, Any] | None = None) -> dict[str, Any]:
    root = models_root(quick)
    rows = model_rows(root)
    write_csv(OUT.results / "prediction_models.csv", rows)
    lat = latency_rows()
    write_csv(OUT.results / "prediction_latency.csv", lat)
    figures()
    return {"model_rows": len(rows), "latency_rows": len(lat)}


def _run_index(frame: Any) -> Any:
    """Index (0-based) of every row's run among the runs of its size, by time."""
    runs = frame.drop_duplicates("run_id")[["run_id", "size", "timestamp"]].sort_values("timestamp")
    runs["k"] = runs.groupby("size").cumcount()
    return frame.merge(runs[["run_id", "k"]], on="run_id")


def model_rows(root: Path) -> list[dict[str, Any]]:
    from models import AppModel
    from profiler import ProfileStore
    from sonic.app import load_app

    store = ProfileStore(root)
    stages_measured = read_csv(OUT.results / "end_to_end_stages.csv")
    out: list[dict[str, Any]] = []
    for name in APPS:
        frame = store.load(name)
        if frame.empty:
            log(f"prediction: no profile of {name} under {root}; run the end_to_end experiment first")
            continue
        frame = _run_index(frame)
        app = load_app(name)
        max_k = int(frame["k"].max()) + 1
        measured = _measured(stages_measured, name)
        for k in range(1, max_k + 1):
            model = AppModel.for_app(app).fit(frame[frame["k"] < k].drop(columns=["k"]))
            report = model.report()
            trusted = sorted({r["stage"] for r in report if r["trusted"]})
            for metric in METRIC_COLUMNS:
                holdout = [r["mape"] for r in report if r["metric"] == metric and r["mape"] is not None]
                errors = []
                abs_err, total = 0.0, 0.0
                for (size, stage), values in measured.items():
                    pred = model.predict(app, size).stages[stage]
                    predicted = {"time": pred.time_s.mean, "output_bytes": pred.output_bytes.mean,
                                 "memory": pred.memory_mb.mean, "fanout": pred.instances}[metric]
                    truth = values[metric]
                    if truth > 0 and math.isfinite(truth):
                        errors.append(abs(predicted - truth) / truth)
                        abs_err += abs(predicted - truth)
                        total += truth
                out.append({"app": name, "profile_runs": k, "metric": metric,
                            "holdout_mape": _mean(holdout), "holdout_mape_max": max(holdout) if holdout else math.nan,
                            "e2e_size_mape": _mean(errors), "e2e_points": len(errors),
                            # weighted: sum |error| / sum measured, so a 1 ms stage counts for what it costs
                            "e2e_size_wape": abs_err / total if total > 0 else math.nan,
                            "trusted_stages": len(trusted), "stages": len(model.stage_order_)})
    return out


def _measured(rows: list[dict[str, str]], app: str) -> dict[tuple[int, str], dict[str, float]]:
    """Median measured per (input size, stage) over the remote runs of the end-to-end experiment."""
    cells: dict[tuple[int, str], list[dict[str, str]]] = {}
    for r in rows:
        if r["app"] == app and r["strategy"] == "remote":
            cells.setdefault((int(r["input_bytes"]), r["stage"]), []).append(r)
    return {key: {metric: median([float(r[col]) for r in rs]) for metric, (_, col) in METRIC_COLUMNS.items()}
            for key, rs in cells.items()}


def _mean(values: list[float]) -> float:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else math.nan


def latency_rows() -> list[dict[str, Any]]:
    out = []
    for r in read_csv(OUT.results / "end_to_end.csv"):
        if r.get("output_ok") != "True" or not r.get("predicted_latency_s"):
            continue
        measured, predicted = float(r["latency_s"]), float(r["predicted_latency_s"])
        out.append({"app": r["app"], "input_bytes": r["input_bytes"], "strategy": r["strategy"], "run": r["run"],
                    "predicted_latency_s": predicted, "latency_s": measured,
                    "error": (predicted - measured) / measured})
    return out


def latency_summary() -> list[dict[str, Any]]:
    rows = read_csv(OUT.results / "prediction_latency.csv")
    out = []
    for strategy in ("sonic", "remote", "vm", "direct", "oracle"):
        errs = [float(r["error"]) for r in rows if r["strategy"] == strategy]
        if errs:
            out.append({"strategy": strategy, "runs": len(errs), "mape": _mean([abs(e) for e in errs]),
                        "median_signed_error": median(errs)})
    return out


def figures() -> list[Path]:
    plt = matplotlib_pyplot()
    outs = []
    rows = read_csv(OUT.results / "prediction_models.csv")
    if rows:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        colours = {"time": "tab:blue", "output_bytes": "tab:orange", "memory": "tab:green", "fanout": "tab:red"}
        for ax, columns, title in ((axes[0], ("holdout_mape",), "models' held-out MAPE (larger sizes)"),
                                   (axes[1], ("e2e_size_mape", "e2e_size_wape"),
                                    "error at the end-to-end sizes (solid MAPE, dashed WAPE)")):
            for column in columns:
                for metric in METRIC_COLUMNS:
                    ks = sorted({int(r["profile_runs"]) for r in rows})
                    ys = []
                    for k in ks:
                        vals = [float(r[column]) for r in rows if r["metric"] == metric and int(r["profile_runs"]) == k
                                and r.get(column) not in ("", "nan", None)]
                        ys.append(_mean(vals) * 100)
                    ax.plot(ks, ys, marker="o", color=colours[metric], linestyle="--" if "wape" in column else "-",
                            label=metric if column == columns[0] else None)
            ax.set_xlabel("profiling runs per size")
            ax.set_ylabel("MAPE (%), mean over apps and stages")
            ax.set_title(title)
            ax.set_xticks(sorted({int(r["profile_runs"]) for r in rows}))
            ax.grid(alpha=0.3)
        axes[0].legend()
        fig.tight_layout()
        OUT.figures.mkdir(parents=True, exist_ok=True)
        out = OUT.figures / "prediction_mape.png"
        fig.savefig(out, dpi=110)
        plt.close(fig)
        outs.append(out)
    lat = read_csv(OUT.results / "prediction_latency.csv")
    if lat:
        fig, ax = plt.subplots(figsize=(5.5, 5))
        colours = {"sonic": "black", "remote": "tab:red", "vm": "tab:green", "direct": "tab:blue", "oracle": "tab:gray"}
        markers = {"sort": "o", "video": "s", "lightgbm": "^"}
        for r in lat:
            ax.scatter(float(r["latency_s"]), float(r["predicted_latency_s"]), color=colours.get(r["strategy"], "k"),
                       marker=markers.get(r["app"], "o"), s=22, alpha=0.75)
        hi = max(max(float(r["latency_s"]), float(r["predicted_latency_s"])) for r in lat) * 1.1
        ax.plot([0, hi], [0, hi], color="k", linewidth=0.8)
        ax.plot([0, hi], [0, hi * 0.75], color="k", linewidth=0.5, linestyle=":")
        ax.plot([0, hi], [0, hi * 1.25], color="k", linewidth=0.5, linestyle=":")
        for s, c in colours.items():
            ax.scatter([], [], color=c, label=s)
        for a, m in markers.items():
            ax.scatter([], [], color="gray", marker=m, label=a)
        ax.set_xlim(0, hi)
        ax.set_ylim(0, hi)
        ax.set_xlabel("measured latency (s)")
        ax.set_ylabel("planner's predicted latency (s)")
        ax.set_title("predicted vs measured (dotted: +-25%)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        out = OUT.figures / "prediction_latency.png"
        fig.savefig(out, dpi=110)
        plt.close(fig)
        outs.append(out)
    return outs
