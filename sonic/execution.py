"""Run one stage instance in the current process and measure it.

**One measurement semantics** (:data:`MEASUREMENT_SEMANTICS`), the same whether the process is
the profiler's forked child or a warm worker on a cluster VM, so that rows of both can be
fitted together:

* ``own_memory_mb``: the instance's own peak above the resident baseline of the process that
  runs it. The resident high-water mark (``VmHWM``) is reset right before the function
  starts by writing ``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0); the resident size at
  that moment is the baseline (``baseline_memory_mb``); the peak minus the baseline is the
  instance's own. A warm worker that imported more libraries or kept a larger heap than a
  freshly forked child has a larger baseline, not a larger instance. Before the baseline is
  read, free heap is returned to the OS (:func:`release_free_memory`), or an instance
  reusing what an earlier one freed would measure nothing of its own. Child processes the
  function started (a codec binary) count wholly. ``peak_memory_mb`` keeps the raw peak.
* ``wall_s``: the function's wall time, with the native thread pools (BLAS, OpenMP) of the
  process held to one thread (:func:`one_core_per_instance`), *minus* the time its threads sat runnable waiting
  for a CPU (``/proc/self/task/*/schedstat``; the largest wait of any one thread, see
  :func:`contention_s`), i.e. the time the instance takes with a core to itself, which is
  what a VM slot gives it; ``cpu_wait_s`` records what was subtracted. Queueing for a slot
  and data transfer happen outside the function and are never in it.
"""

from __future__ import annotations

import ctypes
import gc
import os
import resource
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from threadpoolctl import threadpool_limits

from sonic.app import OUTPUT_NAME_RE, App, Context
from sonic.metrics import InstanceMetrics
from sonic.routing import InstanceSpec

#: Version of what the measured quantities mean; stored with every profile row. Rows of
#: another version are never fitted together with these (1: raw peak and raw wall time;
#: 2: own memory read against a baseline that included freed heap, so reused memory counted 0).
#: 3: BLAS/OpenMP pools as the process found them (a profiling child could time a stage on
#: every core of the profiling machine, where a VM slot gives it one).
MEASUREMENT_SEMANTICS = 4

#: Environment variables that size the native thread pools of libraries loaded later.
_THREAD_POOL_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


@dataclass
class InstanceOutcome:
    metrics: InstanceMetrics
    outputs: list[tuple[str, int]]  # (name, size) of every file written


def _read_hwm_kb() -> int | None:
    try:
        with open("/proc/self/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _read_rss_kb() -> int | None:
    try:
        with open("/proc/self/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def run_queue_wait_s() -> float:
    """Seconds this thread has spent runnable but waiting for a CPU (0 if not available)."""
    try:
        with open("/proc/self/schedstat", "rb") as fh:
            return int(fh.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def thread_waits() -> dict[str, float]:
    """Run-queue wait in seconds of every thread of this process (BLAS pools included)."""
    waits: dict[str, float] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return {"self": run_queue_wait_s()}
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/schedstat", "rb") as fh:
                waits[tid] = int(fh.read().split()[1]) / 1e9
        except (OSError, IndexError, ValueError):
            continue  # the thread ended meanwhile
    return waits


def contention_s(before: dict[str, float], after: dict[str, float]) -> float:
    """Wall time lost to waiting for a CPU between two :func:`thread_waits` readings.

    The largest wait of any one thread: threads working in parallel (a BLAS pool) wait
    in parallel too, and the call finishes when the most delayed one does. A lower
    bound, so never more than what really was lost."""
    return max((after[t] - before.get(t, 0.0) for t in after), default=0.0)


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None  # not glibc: freed heap may stay resident and hide in the baseline


_MALLOC_TRIM = _load_malloc_trim()


def release_free_memory() -> None:
    """Give memory the process holds but does not use back to the OS before measuring a
    baseline. A warm worker's heap keeps what earlier instances freed (glibc raises its mmap
    threshold after large frees, so even big numpy arrays come from the heap and stay
    resident); an instance reusing it would measure zero memory of its own.

    Survivors are then frozen (``gc.freeze``): a full collection walks every tracked object,
    and the import graph of an app with pandas/scikit-learn/lightgbm is ~150k objects, 60-110
    ms per collection here. That was paid before every instance on a warm worker, outside the
    instance's measured time but inside the run's latency, and no cost-model term covered it.
    Frozen, the next collection only walks what was allocated since (one instance's garbage).
    The price: a frozen object that later becomes cyclic garbage is never collected, which
    for long-lived survivors of an import or an earlier instance is a bounded, one-off leak."""
    gc.collect()
    gc.freeze()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


@contextmanager
def one_core_per_instance() -> Iterator[None]:
    """Within the block, hold the process's native thread pools (BLAS, OpenMP, ...) to one
    thread, as dask.distributed's workers do; restore them after.

    An instance runs in a VM slot of one core, next to instances in the other slots.
    Unlimited, a profiling child used every core of the machine that profiled (NumPy's BLAS,
    lightgbm's OpenMP): its measured time was that of a bigger slot than any VM gives, and a
    warm worker's pools oversubscribed the VM's cores. Libraries already loaded are limited
    through ``threadpoolctl``; the environment covers those an app loads later. Forked
    children inherit both, so the reference executor enters it once per run around its forks
    (``threadpoolctl`` takes 17-19 ms in a process with pandas, scikit-learn and lightgbm
    loaded: per forked instance that was 90 s more for `sonic profile sort`); a warm worker
    and a cold-start child enter it for the life of the process."""
    saved = {name: os.environ.get(name) for name in _THREAD_POOL_ENV}
    os.environ.update(dict.fromkeys(_THREAD_POOL_ENV, "1"))
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def run_instance(
    app: App,
    spec: InstanceSpec,
    input_paths: list[Path],
    output_dir: Path,
    scratch_dir: Path,
    *,
    vm: str | None = None,
    cold: bool = False,
) -> InstanceOutcome:
    """Run ``spec`` with ``input_paths`` (same order as ``spec.inputs``) and measure it.

    Raises whatever the stage function raises, after cleaning nothing: the caller owns the
    directories. Outputs are every plain file the function left in ``output_dir``.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    scratch_dir.mkdir(parents=True, exist_ok=True)
    by_stage: dict[str, list[Path]] = {}
    for ref, path in zip(spec.inputs, input_paths, strict=True):
        by_stage.setdefault(ref.stage, []).append(path)
    ctx = Context(
        app=app.name,
        stage=spec.stage,
        instance=spec.index,
        num_instances=spec.num_instances,
        inputs=list(input_paths),
        output_dir=output_dir,
        scratch_dir=scratch_dir,
        key=spec.key,
        inputs_by_stage=by_stage,
        partitions=dict(spec.partitions),
    )
    fn = app.stages[spec.stage].fn
    release_free_memory()
    reset_ok = _reset_hwm()
    baseline_kb = (_read_rss_kb() if reset_ok else None) or 0
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    waits_before = thread_waits()
    started = time.time()
    t0 = time.perf_counter()
    try:
        fn(ctx)
    finally:
        wall = time.perf_counter() - t0
        waited = contention_s(waits_before, thread_waits())
    ended = time.time()
    hwm_kb = _read_hwm_kb() if reset_ok else None
    if hwm_kb is None:  # no reset: the lifetime peak, exact in a freshly forked child
        hwm_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    own_kb = max(hwm_kb - baseline_kb, 0)
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if children_after > children_before:
        hwm_kb = max(hwm_kb, children_after)
        own_kb = max(own_kb, children_after)
    outputs = collect_outputs(spec, output_dir)
    metrics = InstanceMetrics(
        stage=spec.stage,
        instance=spec.index,
        input_bytes=spec.input_bytes,
        output_bytes=sum(size for _, size in outputs),
        n_outputs=len(outputs),
        wall_s=max(wall - waited, 0.0),
        peak_memory_mb=hwm_kb / 1024.0,
        own_memory_mb=own_kb / 1024.0,
        baseline_memory_mb=baseline_kb / 1024.0,
        cpu_wait_s=waited,
        started=started,
        ended=ended,
        vm=vm,
        cold=cold,
    )
    return InstanceOutcome(metrics, outputs)


def collect_outputs(spec: InstanceSpec, output_dir: Path) -> list[tuple[str, int]]:
    outputs: list[tuple[str, int]] = []
    for entry in sorted(os.scandir(output_dir), key=lambda e: e.name):
        if entry.is_symlink() or not entry.is_file():
            raise ValueError(
                f"stage {spec.stage!r} instance {spec.index} left {entry.name!r} in its output "
                "directory, which is not a plain file; write files only, via ctx.output(name)"
            )
        if not OUTPUT_NAME_RE.match(entry.name):
            raise ValueError(
                f"stage {spec.stage!r} instance {spec.index} wrote output {entry.name!r}, "
                "which is not a valid output name; use letters, digits, '.', '_' or '-'"
            )
        outputs.append((entry.name, entry.stat().st_size))
    return outputs


def format_failure(spec: InstanceSpec, exc: BaseException) -> str:
    """One line for the user, with the traceback's last frame of user code."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return (
        f"stage {spec.stage!r} instance {spec.index} (input {spec.input_bytes} bytes) failed"
        f"{where}: {type(exc).__name__}: {exc}"
    )
