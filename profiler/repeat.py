"""Best-of-k timing: re-run short instances and keep their fastest wall time.

On a shared machine other jobs only ever *add* time to an instance, and they add most,
relative to its length, to short instances: a 15 ms map task can take 60 ms when a
neighbour's burst lands on it. The textbook defence (``timeit`` reports the best of k) works
here because stage functions must be idempotent (the runtime re-executes failed instances
from their inputs): an instance is re-run from its inputs, with a clean output directory,
while its runs together stay under a time budget, so long instances run once and cost
nothing extra. The instance's record keeps the last run's outputs, the *fastest* wall time
and the *median* peak memory.
"""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path

from sonic.app import App
from sonic.metrics import InstanceMetrics, RunResult
from sonic.reference import ReferenceExecutor
from sonic.routing import InstanceSpec

#: Seconds an instance may spend in repetitions, and the most runs it gets.
BUDGET_S = 1.0
MAX_RUNS = 5


class RepeatingReferenceExecutor(ReferenceExecutor):
    """The reference executor with best-of-k wall times for short instances."""

    def __init__(self, app: App, *, budget_s: float = BUDGET_S, max_runs: int = MAX_RUNS) -> None:
        super().__init__(app)
        self.budget_s = budget_s
        self.max_runs = max_runs

    def _run_child(self, spec: InstanceSpec, inputs: list[Path], out_dir: Path,
                   scratch: Path) -> tuple[InstanceMetrics, list[tuple[str, int]]]:
        metrics, outputs = super()._run_child(spec, inputs, out_dir, scratch)
        walls, memories = [metrics.wall_s], [metrics.peak_memory_mb]
        while len(walls) < self.max_runs and sum(walls) + min(walls) <= self.budget_s:
            # A clean slate, as for a re-executed instance: no output of the previous run.
            shutil.rmtree(out_dir, ignore_errors=True)
            shutil.rmtree(scratch, ignore_errors=True)
            metrics, outputs = super()._run_child(spec, inputs, out_dir, scratch)
            walls.append(metrics.wall_s)
            memories.append(metrics.peak_memory_mb)
        metrics.wall_s = min(walls)
        metrics.peak_memory_mb = statistics.median(memories)
        return metrics, outputs


def run_best_of(app: App, input_path: Path) -> RunResult:
    """The profiler's default executor: reference execution with best-of-k timing."""
    executor = RepeatingReferenceExecutor(app)
    try:
        return executor.run(input_path)
    finally:
        executor.cleanup()
