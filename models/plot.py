"""PNG of measured points and fitted curves, one panel per metric, one colour per stage.

Uses matplotlib's object API with the Agg canvas (no pyplot): no display needed and no
global backend switch that could disturb a caller's own plotting.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from models.app_model import INSTANCE_METRICS, METRICS, AppModel, with_memory

_LABELS = {"memory": "peak memory (MB)", "time": "wall time, warm (s)", "output_bytes": "output bytes",
           "fanout": "instances"}


def plot_models(model: AppModel, profile: pd.DataFrame, path: Path) -> Path:
    model._check_fitted()
    rows = profile[(profile["app"] == model.app_name) & profile["error"].isna()]
    fig = Figure(figsize=(11, 8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2).ravel()
    colours = {s: f"C{i % 10}" for i, s in enumerate(model.stage_order_)}
    rows = with_memory(rows, model.worker_memory_mb_)
    for ax, metric in zip(axes, METRICS):
        for stage in model.stage_order_:
            mm = model.stages_[stage].metrics[metric]
            data = rows[(rows["stage"] == stage) & ~rows["cold"].astype(bool)]
            if metric == "fanout":
                data = rows[rows["stage"] == stage].drop_duplicates("run_id")
                x, y = data["app_input_bytes"].to_numpy(float), data["instances"].to_numpy(float)
            else:
                x, y = data["input_bytes"].to_numpy(float), data[INSTANCE_METRICS[metric]].to_numpy(float)
            if x.size == 0:
                continue
            ax.scatter(x, y, s=10, alpha=0.5, color=colours[stage])
            lo, hi = max(float(x.min()), 1.0), max(float(x.max()), 1.0) * 2
            grid = np.geomspace(lo, hi, 80) if hi > lo else np.array([lo, hi])
            ax.plot(grid, mm.predict(grid.reshape(-1, 1)), color=colours[stage],
                    label=f"{stage}: {mm.model_name_}")
        ax.set_xscale("log")
        ax.set_yscale("log", nonpositive="mask")  # a stage that writes nothing has no log
        ax.set_xlabel("app input bytes" if metric == "fanout" else "instance input bytes")
        ax.set_ylabel(_LABELS[metric])
        ax.set_title(metric)
        ax.legend(fontsize=7)
    fig.suptitle(f"{model.app_name}: measurements (dots) and fitted models (lines, to 2x the largest size)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
