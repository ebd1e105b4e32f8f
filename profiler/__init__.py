"""Profiler: run an application on generated inputs of several sizes and record, per stage
instance, input bytes, wall time (warm/cold), peak memory, output bytes and fanout in an
append-only Parquet store (``.sonic/profiles/APP/part-*.parquet``).

Names are imported lazily (PEP 562): ``python -m profiler.cold_child`` measures a cold
start, which must pay for the app's imports, not for pandas and pyarrow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same names, for type checkers and IDEs
    from profiler.record import record_run
    from profiler.repeat import RepeatingReferenceExecutor, run_best_of
    from profiler.schema import COLUMNS, FEATURE_PREFIX, run_to_frame
    from profiler.store import CorruptProfileError, ProfileStore
    from profiler.sweep import Executor, ProfileSummary, ProfilingError, ProgressEvent, profile_app, run_reference

_EXPORTS = {
    "record_run": "profiler.record",
    "RepeatingReferenceExecutor": "profiler.repeat",
    "run_best_of": "profiler.repeat",
    "COLUMNS": "profiler.schema",
    "FEATURE_PREFIX": "profiler.schema",
    "run_to_frame": "profiler.schema",
    "CorruptProfileError": "profiler.store",
    "ProfileStore": "profiler.store",
    "Executor": "profiler.sweep",
    "ProfilingError": "profiler.sweep",
    "ProfileSummary": "profiler.sweep",
    "ProgressEvent": "profiler.sweep",
    "profile_app": "profiler.sweep",
    "run_reference": "profiler.sweep",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'profiler' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
