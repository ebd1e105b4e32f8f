"""Run one stage instance in the current process and measure it.

Peak memory is the process's resident high-water mark (``VmHWM``), reset right before the
function starts by writing ``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0), so a warm worker
that runs many instances reports each instance's own peak, and the max RSS of any child
processes the function started (e.g. a codec binary). Where the reset is unavailable the
process's lifetime ``ru_maxrss`` is used, which is exact in a freshly forked child.
"""

from __future__ import annotations

import os
import resource
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from sonic.app import OUTPUT_NAME_RE, App, Context
from sonic.metrics import InstanceMetrics
from sonic.routing import InstanceSpec


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
    )
    fn = app.stages[spec.stage].fn
    reset_ok = _reset_hwm()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.time()
    t0 = time.perf_counter()
    fn(ctx)
    wall = time.perf_counter() - t0
    ended = time.time()
    hwm_kb = _read_hwm_kb() if reset_ok else None
    if hwm_kb is None:
        hwm_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if children_after > children_before:
        hwm_kb = max(hwm_kb, children_after)
    outputs = collect_outputs(spec, output_dir)
    metrics = InstanceMetrics(
        stage=spec.stage,
        instance=spec.index,
        input_bytes=spec.input_bytes,
        output_bytes=sum(size for _, size in outputs),
        n_outputs=len(outputs),
        wall_s=wall,
        peak_memory_mb=hwm_kb / 1024.0,
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
