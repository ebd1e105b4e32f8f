"""Profiler: run an application on generated inputs of several sizes and record, per stage
instance, input bytes, wall time (warm/cold), peak memory, output bytes and fanout in an
append-only Parquet store (``.sonic/profiles/APP/part-*.parquet``)."""

from profiler.record import record_run
from profiler.schema import COLUMNS, FEATURE_PREFIX, run_to_frame
from profiler.store import CorruptProfileError, ProfileStore
from profiler.sweep import Executor, ProfilingError, ProfileSummary, ProgressEvent, profile_app, run_reference

__all__ = [
    "COLUMNS", "FEATURE_PREFIX", "CorruptProfileError", "Executor", "ProfileStore", "ProfileSummary",
    "ProfilingError", "ProgressEvent", "profile_app", "record_run", "run_reference", "run_to_frame",
]
