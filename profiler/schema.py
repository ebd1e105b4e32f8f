"""The tidy measurement table: one row per stage instance of one run.

A profile is a long ("tidy") table so that the runtime, the profiler and online refit all
append the same kind of row and the models can group it any way they need. Run-level
values (app input bytes, features, requested size) are repeated on every row of the run:
that costs a few bytes and saves every reader a join.
"""

from __future__ import annotations

import time
import uuid
from typing import Final

import pandas as pd

from sonic.execution import MEASUREMENT_SEMANTICS
from sonic.metrics import RunResult

#: Prefix of the columns that hold the app's input features (``app.feature_extractor``).
FEATURE_PREFIX: Final = "feat_"

#: Columns every profile part must have, with their pandas dtypes.
COLUMNS: Final[dict[str, str]] = {
    "run_id": "string",
    "timestamp": "float64",        # seconds since the epoch, when the run was recorded
    "source": "string",            # "reference" | "cluster" | ...
    "app": "string",
    "size": "Int64",               # requested generator size; <NA> for recorded (online) runs
    "app_input_bytes": "int64",
    "output_ok": "bool",
    "stage": "string",
    "instance": "int64",
    "instances": "int64",          # the stage's fanout in this run
    "input_bytes": "int64",
    "output_bytes": "int64",
    "n_outputs": "int64",
    "wall_s": "float64",
    "peak_memory_mb": "float64",
    "cold": "bool",
    "attempt": "int64",
    "vm": "string",
    "error": "string",
    # What the measurements mean and how they were taken (see sonic.execution):
    "semantics": "int64",          # MEASUREMENT_SEMANTICS of the row; rows of another are never fitted together
    "own_memory_mb": "float64",    # the instance's own peak above its process's resident baseline
    "baseline_memory_mb": "float64",  # that process's resident size when the instance started
    "cpu_wait_s": "float64",       # run-queue wait taken out of wall_s
}

#: Columns added by later versions; parts written before them are read with these defaults
#: (semantics 1: raw peak and raw wall time, never fitted with today's rows).
LATER_COLUMNS: Final[dict[str, object]] = {"semantics": 1, "own_memory_mb": float("nan"),
                                           "baseline_memory_mb": float("nan"), "cpu_wait_s": 0.0}


def feature_columns(frame: pd.DataFrame) -> list[str]:
    """Names of the feature columns present in ``frame`` (with the prefix)."""
    return sorted(c for c in frame.columns if c.startswith(FEATURE_PREFIX))


def source_of(result: RunResult) -> str:
    """``reference`` for the local executor, ``cluster`` for anything else (the runtime)."""
    return "reference" if result.strategy == "reference" else "cluster"


def run_to_frame(
    result: RunResult,
    *,
    source: str | None = None,
    size: int | None = None,
    run_id: str | None = None,
    timestamp: float | None = None,
    cold: bool | None = None,
) -> pd.DataFrame:
    """Tidy rows of one run. ``cold`` overrides the per-instance flag (a cold-start sweep)."""
    run_id = run_id or uuid.uuid4().hex
    timestamp = time.time() if timestamp is None else timestamp
    fanout: dict[str, int] = {}
    for m in result.instances:
        fanout[m.stage] = fanout.get(m.stage, 0) + 1
    rows = [
        {
            "run_id": run_id,
            "timestamp": timestamp,
            "source": source or source_of(result),
            "app": result.app,
            "size": size,
            "app_input_bytes": int(result.input_bytes),
            "output_ok": bool(result.output_ok),
            "stage": m.stage,
            "instance": int(m.instance),
            "instances": fanout[m.stage],
            "input_bytes": int(m.input_bytes),
            "output_bytes": int(m.output_bytes),
            "n_outputs": int(m.n_outputs),
            "wall_s": float(m.wall_s),
            "peak_memory_mb": float(m.peak_memory_mb),
            "cold": bool(m.cold if cold is None else cold),
            "attempt": int(m.attempt),
            "vm": m.vm,
            "error": m.error,
            "semantics": MEASUREMENT_SEMANTICS,
            "own_memory_mb": float(m.own_memory_mb),
            "baseline_memory_mb": float(m.baseline_memory_mb),
            "cpu_wait_s": float(m.cpu_wait_s),
        }
        for m in result.instances
    ]
    frame = pd.DataFrame(rows, columns=list(COLUMNS)).astype(COLUMNS)
    for name, value in sorted(result.features.items()):
        frame[FEATURE_PREFIX + name] = float(value)
    return frame
