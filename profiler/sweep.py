"""The size sweep: generate inputs, run the app on each, append the measurements.

Runs are interleaved (run 1 of every size, then run 2 of every size, ...) rather than
size by size, so slow drift of a shared machine (another job starting, the parent process
growing) spreads over all sizes instead of masquerading as a size effect.
Each run is appended to the store as soon as it finishes: a crash later in the sweep keeps
everything measured before it.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from profiler.cold import ColdExecutor
from profiler.isolation import ChildFailure, in_fork
from profiler.repeat import run_best_of
from profiler.schema import run_to_frame
from profiler.store import ProfileStore
from sonic.app import App
from sonic.errors import ExecutionError, ProfilingError, SonicError, UserInputError
from sonic.metrics import RunResult
from sonic.reference import ReferenceExecutor
from sonic.sizes import format_size

#: Runs an app once on an input and measures it: the reference executor, or a cluster runtime.
Executor = Callable[[App, Path], RunResult]


@dataclass(frozen=True)
class ProgressEvent:
    """One step of the sweep. ``phase`` is ``start`` or ``done``; ``seconds`` is the run's."""

    size: int
    run: int          # 1-based index among the runs of this size
    runs: int
    phase: str
    seconds: float = 0.0
    cold: bool = False

    def describe(self) -> str:
        kind = "cold run" if self.cold else "run"
        text = f"size {human_size(self.size)} {kind} {self.run}/{self.runs}"
        return text + (f" ... {self.seconds:.1f}s" if self.phase == "done" else " ...")


Progress = Callable[[ProgressEvent], None]


def human_size(n: int) -> str:
    """``4MB`` for sizes given in decimal units (as on the command line), else ``3.8 MiB``."""
    for unit, factor in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    return format_size(n)


@dataclass
class ProfileSummary:
    app: str
    sizes: list[int]
    run_ids: list[str] = field(default_factory=list)
    parts: list[Path] = field(default_factory=list)
    rows: int = 0
    invalid_outputs: int = 0
    seconds: float = 0.0


def run_reference(app: App, input_path: Path, partitions: Mapping[str, int] | None = None) -> RunResult:
    """The default executor: the local reference executor, cleaned up after the run."""
    executor = ReferenceExecutor(app, partitions=partitions)
    try:
        return executor.run(input_path)
    finally:
        executor.cleanup()


#: Instance counts of elastic stages in successive runs of a size (clipped to each stage's
#: bounds): the per-instance models must see the bytes per instance vary at a fixed input
#: size, or they could not predict a count the planner considers but the app never chose.
PROFILE_COUNTS = (1, 4, 16, 64)


def profile_counts(app: App, run: int, counts: Sequence[int] = PROFILE_COUNTS) -> dict[str, int]:
    """The elastic stages' instance counts for run ``run`` (0-based) of every size."""
    target = counts[run % len(counts)]
    return {name: min(max(target, b.min), b.max) for name, b in app.elastic_stages().items()}


_STAGE_RE = re.compile(r"stage '([^']+)'")
#: Executors that run in this process and so gain from fork isolation.
_LOCAL_EXECUTORS: tuple[Executor, ...] = (run_reference, run_best_of)


def _validate(app: App, sizes: Sequence[int], runs: int, cold_runs: int, *, generated: bool = True) -> list[int]:
    if generated and app.generator is None:
        raise UserInputError(
            f"app {app.name!r} has no input generator; give your own sample inputs of a few sizes "
            "(`sonic profile APP --inputs DIR`) or register a generator with @app.generate_input "
            "so `sonic profile` can make inputs of each size"
        )
    if not sizes:
        raise UserInputError("no sizes to profile; give some, e.g. --sizes 2MB,4MB,8MB,16MB,32MB")
    clean: list[int] = []
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, int) or s <= 0:
            raise UserInputError(f"profile size {s!r} is not a positive number of bytes")
        clean.append(s)
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise UserInputError(f"--runs must be a positive integer, got {runs!r}")
    if isinstance(cold_runs, bool) or not isinstance(cold_runs, int) or cold_runs < 0:
        raise UserInputError(f"cold_runs must be a non-negative integer, got {cold_runs!r}")
    return sorted(set(clean))


def profile_app(
    app: App,
    sizes: Sequence[int],
    runs: int,
    *,
    store: ProfileStore,
    executor_factory: Executor | None = None,
    progress: Progress | None = None,
    seed: int = 0,
    cold_runs: int = 0,
    source: str | None = None,
    isolate: bool | None = None,
    priority: int | None = -10,
    samples: Mapping[int, Sequence[Path]] | None = None,
    elastic_counts: Sequence[int] = PROFILE_COUNTS,
) -> ProfileSummary:
    """Profile ``app`` on generated inputs of every size in ``sizes``, ``runs`` times each.

    ``executor_factory(app, input_path) -> RunResult`` runs the app (default: the reference
    executor with contention-free, best-of-k timing, :mod:`profiler.repeat`; its
    instances are forked from a warm parent and report ``cold=False``).
    ``cold_runs`` adds that many runs per size in which every instance starts in a fresh
    interpreter (see :mod:`profiler.cold`): their wall time includes interpreter start and
    imports, and they are stored with ``cold=True``. Run ``r`` of every size uses generator
    seed ``seed + r``. ``isolate`` (default: on for the reference executor, off for others,
    e.g. a cluster client whose sockets must not be forked) generates every input and runs
    every run in a forked child, see :mod:`profiler.isolation`. ``priority``: the nice
    value of that child and so of every instance (where permitted, i.e. as root): on a
    shared machine other jobs then steal less CPU from the stages being measured; ``None``
    keeps the normal priority. Raises
    :class:`ProfilingError` on the first failing run, after the runs before it were stored.
    ``samples`` (size in bytes -> the user's input files or directories of that size)
    replaces generated inputs: run ``r`` of a size uses its ``r``-th sample (cyclically);
    ``sizes`` must then be the samples' sizes. Elastic stages run with ``elastic_counts[r]``
    instances (cyclically, clipped to their bounds) where the executor is a local one.
    """
    app.validate()
    ordered = _validate(app, sizes, runs, cold_runs, generated=samples is None)
    executor_factory = executor_factory or run_best_of
    isolate = executor_factory in _LOCAL_EXECUTORS if isolate is None else isolate
    # Elastic stages get varied counts (PROFILE_COUNTS) where the executor can take them.
    elastic = bool(app.elastic_stages()) and executor_factory in _LOCAL_EXECUTORS
    summary = ProfileSummary(app=app.name, sizes=ordered)
    t_sweep = time.perf_counter()
    plan: list[tuple[int, int, bool]] = [(r, s, False) for r in range(runs) for s in ordered]
    if cold_runs:
        cold_exec: Executor = ColdExecutor.for_app(app)
        plan += [(r, s, True) for r in range(cold_runs) for s in ordered]
    # Inputs are generated once per (size, seed) and shared by the warm and cold runs.
    last_use = {(s, r): i for i, (r, s, _) in enumerate(plan)}
    workdir = Path(tempfile.mkdtemp(prefix=f"sonic-profile-{app.name}-"))
    try:
        for step, (r, size, cold) in enumerate(plan):
            total = cold_runs if cold else runs
            if progress:
                progress(ProgressEvent(size, r + 1, total, "start", cold=cold))
            t_run = time.perf_counter()
            sample = samples[size][r % len(samples[size])] if samples is not None else None
            # An executor profiling elastic stages also takes partitions= (the counts to run at).
            run_exec: Callable[..., RunResult] = cold_exec if cold else executor_factory
            if elastic and not cold:
                run_exec = functools.partial(run_exec, partitions=profile_counts(app, r, elastic_counts))
            result = _one_run(app, size, seed + r, workdir, run_exec,
                              runs_recorded=len(summary.run_ids), isolate=isolate, priority=priority,
                              sample=sample)
            if not result.features and app.feature_extractor is not None:
                # A custom executor may not extract features; the models need them per run.
                path = sample if sample is not None else _input_path(workdir, size, seed + r)
                result.features = _features_of(app, path)
            run_id = uuid.uuid4().hex
            frame = run_to_frame(result, source=source, size=size, run_id=run_id,
                                 cold=True if cold else None)
            summary.parts.append(store.append(app.name, frame))
            summary.run_ids.append(run_id)
            summary.rows += len(frame)
            summary.invalid_outputs += 0 if result.output_ok else 1
            if last_use[(size, r)] == step:
                _remove(_input_path(workdir, size, seed + r))
            if progress:
                progress(ProgressEvent(size, r + 1, total, "done", time.perf_counter() - t_run, cold))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    summary.seconds = time.perf_counter() - t_sweep
    return summary


def _input_path(workdir: Path, size: int, seed: int) -> Path:
    return workdir / f"input-{size}-{seed}"


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _generate(app: App, size: int, seed: int, workdir: Path, runs_recorded: int, isolate: bool) -> Path:
    path = _input_path(workdir, size, seed)
    if path.exists():
        return path
    generator = app.generator
    assert generator is not None  # checked by _validate
    try:
        if isolate:
            in_fork(lambda: generator(path, size, seed))
        else:
            generator(path, size, seed)
    except (ChildFailure, OSError, ValueError, RuntimeError, SonicError) as exc:
        _remove(path)
        raise ProfilingError(
            f"app {app.name!r}: the input generator failed for size {human_size(size)} "
            f"(seed {seed}): {type(exc).__name__ if not isinstance(exc, ChildFailure) else exc.kind}: {exc}; "
            f"{runs_recorded} earlier run(s) are kept",
            stage=None, size=size, runs_recorded=runs_recorded,
        ) from exc
    return path


def _one_run(app: App, size: int, seed: int, workdir: Path, executor: Executor,
             *, runs_recorded: int, isolate: bool, priority: int | None = None,
             sample: Path | None = None) -> RunResult:
    path = sample if sample is not None else _generate(app, size, seed, workdir, runs_recorded, isolate)

    def measured_run() -> RunResult:
        if priority is not None:
            _raise_priority(priority)
        return executor(app, path)

    try:
        if isolate:
            return in_fork(measured_run, lambda exc: {"sonic": isinstance(exc, SonicError)})
        return executor(app, path)
    except (SonicError, ChildFailure) as exc:
        # Sonic errors (ExecutionError...) name the stage and input; anything else is a bug.
        if isinstance(exc, ChildFailure) and not exc.fields.get("sonic"):
            raise ExecutionError(f"profiling app {app.name!r} at input size {human_size(size)}: "
                                 f"the run crashed: {exc.kind}: {exc}") from exc
        found = _STAGE_RE.search(str(exc))
        stage = found.group(1) if found else None
        where = f"stage {stage!r}" if stage else "a stage"
        raise ProfilingError(
            f"profiling app {app.name!r} failed in {where} at input size {human_size(size)} "
            f"({size} bytes, seed {seed}): {exc}; {runs_recorded} earlier run(s) are kept in the profile",
            stage=stage, size=size, runs_recorded=runs_recorded,
        ) from exc


def _raise_priority(nice: int) -> None:
    """Set this (forked) process's nice value; quietly keep the current one if not allowed."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except PermissionError:
        pass  # not root: measure at normal priority, the robust statistics still apply


def _features_of(app: App, path: Path) -> dict[str, float]:
    assert app.feature_extractor is not None
    return {k: float(v) for k, v in app.feature_extractor(path).items()} if path.exists() else {}
