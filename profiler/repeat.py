"""The profiler's executor: reference execution with contention-free, best-of-k timing.

On a shared machine other jobs only ever *add* time to an instance, in two ways, and the
profiler removes both:

* **waiting for a CPU.** :func:`sonic.execution.run_instance` already records wall time
  net of the run-queue wait of the instance's threads (the same on a cluster's warm
  workers, so both measure the same thing).
* **bursts of other interference** (memory bandwidth, cache, I/O): short instances, where a
  neighbour's burst weighs most, are re-run from their inputs (stage functions must be
  idempotent: the runtime re-executes failed instances the same way) with a clean output
  directory while their runs together stay under a time budget, and the fastest run
  counts (``timeit``'s best of k). Any instance whose first run is under the budget gets a
  second run: one slow first run is exactly the case best-of-k exists for (page faults on
  this VM's fresh memory took 0.6 s instead of 0.012 s in 1 of 12 forks, a 5x slower
  instance with no run-queue wait to show for it). Long instances run once and cost
  nothing extra.

The instance's record keeps the last run's outputs, the fastest wall time and the median
peak memory. The fork/report protocol mirrors :meth:`ReferenceExecutor._run_child`.
"""

from __future__ import annotations

import shutil
import statistics
from collections.abc import Mapping
from pathlib import Path

from sonic.app import App
from sonic.metrics import InstanceMetrics, RunResult
from sonic.reference import ReferenceExecutor
from sonic.routing import InstanceSpec

#: Seconds an instance may spend in repetitions, and the most runs it gets.
BUDGET_S = 1.0
MAX_RUNS = 5


class RepeatingReferenceExecutor(ReferenceExecutor):
    """The reference executor with contention-free, best-of-k wall times (module doc)."""

    def __init__(self, app: App, *, budget_s: float = BUDGET_S, max_runs: int = MAX_RUNS,
                 partitions: Mapping[str, int] | None = None) -> None:
        super().__init__(app, partitions=partitions)
        self.budget_s = budget_s
        self.max_runs = max_runs

    def _run_child(self, spec: InstanceSpec, inputs: list[Path], out_dir: Path,
                   scratch: Path) -> tuple[InstanceMetrics, list[tuple[str, int]]]:
        metrics, outputs = self._run_once(spec, inputs, out_dir, scratch)
        walls, memories, own = [metrics.wall_s], [metrics.peak_memory_mb], [metrics.own_memory_mb]
        while len(walls) < self.max_runs and sum(walls) < self.budget_s:
            # A clean slate, as for a re-executed instance: no output of the previous run.
            shutil.rmtree(out_dir, ignore_errors=True)
            shutil.rmtree(scratch, ignore_errors=True)
            metrics, outputs = self._run_once(spec, inputs, out_dir, scratch)
            walls.append(metrics.wall_s)
            memories.append(metrics.peak_memory_mb)
            own.append(metrics.own_memory_mb)
        metrics.wall_s = min(walls)
        metrics.peak_memory_mb = statistics.median(memories)
        metrics.own_memory_mb = statistics.median(own)
        return metrics, outputs

    def _run_once(self, spec: InstanceSpec, inputs: list[Path], out_dir: Path,
                  scratch: Path) -> tuple[InstanceMetrics, list[tuple[str, int]]]:
        return self._fork_instance(spec, inputs, out_dir, scratch)


def run_best_of(app: App, input_path: Path, partitions: Mapping[str, int] | None = None) -> RunResult:
    """The profiler's default executor (module doc); ``partitions``: counts of elastic stages."""
    executor = RepeatingReferenceExecutor(app, partitions=partitions)
    try:
        return executor.run(input_path)
    finally:
        executor.cleanup()
