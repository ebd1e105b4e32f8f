"""Cold-start measurements: every instance in a fresh interpreter.

The reference executor forks instances from a warm parent that has already imported the
app, so it measures warm invocations. A serverless cold start also pays interpreter start-up
and the app's imports. :class:`ColdExecutor` routes exactly like the reference executor but
runs each instance with ``python -m profiler.cold_child``; the recorded wall time spans spawn
to exit, and peak memory is the fresh process's own. It needs the app importable as
``module:attr`` (a workload, or an App at module level of an importable module).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from sonic.app import App
from sonic.errors import ExecutionError, UserInputError
from sonic.metrics import InstanceMetrics, RunResult
from sonic.reference import ReferenceExecutor
from sonic.routing import InstanceSpec


def locate_app(app: App) -> str:
    """The ``module:attr`` under which ``app`` can be imported again in a fresh interpreter."""
    modules = [stage.fn.__module__ for stage in app.stages.values()] + sorted(sys.modules)
    for name in dict.fromkeys(modules):
        module = sys.modules.get(name)
        if module is None or name == "__main__":
            continue
        for attr, value in list(vars(module).items()):
            if value is app:
                return f"{name}:{attr}"
    raise UserInputError(
        f"cold profiling of app {app.name!r} needs the App importable as module:attr; "
        "define it at module level of an importable module (or drop cold runs)"
    )


class ColdReferenceExecutor(ReferenceExecutor):
    """The reference executor with every instance started in a new interpreter."""

    def __init__(self, app: App, app_spec: str) -> None:
        super().__init__(app)
        self.app_spec = app_spec

    def _run_child(self, spec: InstanceSpec, inputs: list[Path], out_dir: Path,
                   scratch: Path) -> tuple[InstanceMetrics, list[tuple[str, int]]]:
        request = {
            "app": self.app_spec,
            "spec": {"stage": spec.stage, "index": spec.index, "num_instances": spec.num_instances,
                     "key": spec.key, "inputs": [asdict(ref) for ref in spec.inputs]},
            "inputs": [str(p) for p in inputs],
            "out_dir": str(out_dir),
            "scratch": str(scratch),
        }
        # The child must import the same modules as this process, tests included.
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "profiler.cold_child"], input=json.dumps(request),
                              capture_output=True, text=True, env=env, check=False)
        wall = time.perf_counter() - t0
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            detail = lines[-1] if lines else (proc.stderr.strip().splitlines() or ["no output"])[-1]
            try:
                detail = json.loads(detail)["error"]
            except (ValueError, KeyError, TypeError):
                pass  # not our JSON document: show the raw last line
            raise ExecutionError(f"cold run: {detail}")
        doc = json.loads(lines[-1])
        metrics = InstanceMetrics(**doc["metrics"])
        metrics.wall_s = wall  # spawn to exit: what a cold invocation costs
        metrics.cold = True
        return metrics, [(str(n), int(s)) for n, s in doc["outputs"]]


class ColdExecutor:
    """An :data:`profiler.sweep.Executor` running every instance cold."""

    def __init__(self, app_spec: str) -> None:
        self.app_spec = app_spec

    @classmethod
    def for_app(cls, app: App) -> ColdExecutor:
        return cls(locate_app(app))

    def __call__(self, app: App, input_path: Path) -> RunResult:
        executor = ColdReferenceExecutor(app, self.app_spec)
        try:
            return executor.run(input_path)
        finally:
            executor.cleanup()
