"""The reference executor: any App, one process tree, stage by stage, in a temp directory.

Each instance runs in a forked child so its peak memory is its own (the child's resident
high-water mark, not a guess) and a crash or ``os._exit`` in user code cannot take the
executor down. It is the correctness yardstick for the distributed runtime and the first
data source of the profiler.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import cast

from sonic.app import APP_INPUT, App
from sonic.errors import ExecutionError, UserInputError
from sonic.execution import InstanceOutcome, format_failure, one_core_per_instance, run_instance
from sonic.forking import ChildVanished, fork_and_report
from sonic.metrics import EdgeMetrics, InstanceMetrics, RunResult, StageMetrics
from sonic.routing import InstanceSpec, ObjectRef, edge_bytes, route_instances

ProgressCallback = Callable[[str, int, int], None]


def input_refs(input_path: Path) -> tuple[list[ObjectRef], dict[str, Path]]:
    """ObjectRefs and paths of the application input (a file, or every file of a directory)."""
    if not input_path.exists():
        raise UserInputError(f"input {input_path} does not exist; "
                             "generate one with `sonic workloads gen APP --size 50MB -o PATH`")
    if not input_path.is_file() and not input_path.is_dir():
        raise UserInputError(f"input {input_path} is neither a regular file nor a directory (a device, pipe or "
                             "socket cannot be staged); pass a file or a directory of files")
    try:
        files = [input_path] if input_path.is_file() else sorted(p for p in input_path.iterdir() if p.is_file())
    except OSError as exc:
        raise UserInputError(f"cannot read input directory {input_path}: {exc.strerror}; check its permissions") from None
    if not files:
        raise UserInputError(f"input directory {input_path} holds no files")
    refs = [ObjectRef(APP_INPUT, 0, f.name, f.stat().st_size) for f in files]
    return refs, {ref.key: f.resolve() for ref, f in zip(refs, files)}


class ReferenceExecutor:
    """Run an App locally, sequentially, one forked child per instance.

    ``partitions``: instance counts for elastic stages (what a plan would choose); their
    producers learn them through ``Context.partitions_for``.

    ``workdir``: where outputs go (a fresh temp dir by default, removed by :meth:`cleanup`
    unless ``keep`` is set). ``progress(stage, done, total)`` is called after each instance.
    """

    def __init__(self, app: App, *, workdir: Path | None = None, keep: bool = False,
                 progress: ProgressCallback | None = None, partitions: Mapping[str, int] | None = None) -> None:
        self.app = app.validate()
        # Instance counts chosen for elastic stages (as a plan's); none: the app decides.
        self.partitions = dict(partitions or {})
        self.keep = keep or workdir is not None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=f"sonic-ref-{app.name}-"))
        self.progress = progress

    def run(self, input_path: Path) -> RunResult:
        app = self.app
        refs, paths = input_refs(Path(input_path))
        produced: dict[str, list[list[ObjectRef]]] = {}
        stage_specs: dict[str, list[InstanceSpec]] = {}
        metrics: list[InstanceMetrics] = []
        stage_seconds: dict[str, float] = {}
        t_start = time.perf_counter()
        with one_core_per_instance():  # the forked instances inherit the limit (see there)
            for stage in app.topological_order():
                specs = route_instances(app, stage, produced, refs, self.partitions)
                stage_specs[stage] = specs
                t_stage = time.perf_counter()
                outputs: list[list[ObjectRef]] = []
                for spec in specs:
                    out_dir = self.workdir / stage / str(spec.index) / "out"
                    scratch = self.workdir / stage / str(spec.index) / "scratch"
                    m, files = self._run_child(spec, [paths[r.key] for r in spec.inputs], out_dir, scratch)
                    shutil.rmtree(scratch, ignore_errors=True)
                    metrics.append(m)
                    instance_refs = [ObjectRef(stage, spec.index, name, size) for name, size in files]
                    for ref in instance_refs:
                        paths[ref.key] = out_dir / ref.name
                    outputs.append(instance_refs)
                    if self.progress:
                        self.progress(stage, spec.index + 1, len(specs))
                produced[stage] = outputs
                stage_seconds[stage] = time.perf_counter() - t_stage
        latency = time.perf_counter() - t_start
        final = [paths[r.key] for s in app.sinks() for refs in produced[s] for r in refs]
        verdict = app.check_output(Path(input_path), final)
        ok, detail = verdict.ok, verdict.detail
        features = app.features_of(Path(input_path))
        return RunResult(
            app=app.name,
            strategy="reference",
            input_bytes=sum(r.size for r in refs),
            latency_s=latency,
            output_ok=ok,
            output_detail=detail,
            edges=[
                # The reference executor keeps one file per output (it never packs).
                EdgeMetrics(e.src, e.dst, "local", edge_bytes(stage_specs[e.dst], e.src), 0.0,
                            sum(len(refs) for refs in produced[e.src]))
                for e in app.edges()
            ],
            stages=[
                StageMetrics(
                    name=s,
                    instances=len(stage_specs[s]),
                    seconds=stage_seconds[s],
                    peak_memory_mb=max((m.peak_memory_mb for m in metrics if m.stage == s), default=0.0),
                    input_bytes=sum(m.input_bytes for m in metrics if m.stage == s),
                    output_bytes=sum(m.output_bytes for m in metrics if m.stage == s),
                )
                for s in app.topological_order()
            ],
            instances=metrics,
            outputs=[str(p) for p in final],
            features=features,
        )

    def _run_child(self, spec: InstanceSpec, inputs: list[Path], out_dir: Path,
                   scratch: Path) -> tuple[InstanceMetrics, list[tuple[str, int]]]:
        """Run one instance in a forked child; subclasses may repeat or post-process it."""
        return self._fork_instance(spec, inputs, out_dir, scratch)

    def _measure(self, spec: InstanceSpec, inputs: list[Path], out_dir: Path, scratch: Path) -> InstanceOutcome:
        """What the forked child runs (override to change how an instance is measured)."""
        return run_instance(self.app, spec, inputs, out_dir, scratch)

    def _fork_instance(self, spec: InstanceSpec, inputs: list[Path], out_dir: Path,
                       scratch: Path) -> tuple[InstanceMetrics, list[tuple[str, int]]]:
        def measure() -> tuple[InstanceMetrics, list[tuple[str, int]]]:
            outcome = self._measure(spec, inputs, out_dir, scratch)
            return outcome.metrics, [(str(name), int(size)) for name, size in outcome.outputs]

        try:
            # Stage prints go to stderr: stdout may carry the CLI's JSON report.
            report = fork_and_report(measure, lambda exc: format_failure(spec, exc), stdout_to_stderr=True)
        except ChildVanished as lost:
            raise ExecutionError(
                f"stage {spec.stage!r} instance {spec.index} (input {spec.input_bytes} bytes) {lost.how} "
                "without reporting (out of memory, or os._exit in the function?)"
            ) from None
        if not report.ok:
            raise ExecutionError(report.failure)
        return cast(tuple[InstanceMetrics, list[tuple[str, int]]], report.value)  # ok: measure()'s value

    def cleanup(self) -> None:
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
