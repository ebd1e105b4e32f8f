"""Append one measured run (from ``sonic run`` or the runtime) to the profile store."""

from __future__ import annotations

from pathlib import Path

from profiler.schema import run_to_frame
from profiler.store import ProfileStore
from sonic.metrics import RunResult


def record_run(result: RunResult, store: ProfileStore, *, source: str | None = None,
               size: int | None = None) -> Path:
    """Store every instance of ``result``; returns the new part file.

    ``source`` defaults to ``reference`` for the reference executor and ``cluster``
    otherwise; ``size`` (the requested generator size) is unknown for user inputs, in which
    case the models group the run by its app input bytes.
    """
    return store.append(result.app, run_to_frame(result, source=source, size=size))
