"""Input-file helpers shared by the example apps."""

from __future__ import annotations

from pathlib import Path

import sonic


def input_files(path: Path) -> list[Path]:
    """The application input as the executors see it: a file, or every file of a directory."""
    path = Path(path)
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.is_file())


def single_input(ctx: sonic.Context) -> Path:
    """The one input file of an instance; a clear error naming the stage otherwise."""
    if len(ctx.inputs) != 1:
        names = ", ".join(p.name for p in ctx.inputs) or "none"
        raise ValueError(
            f"stage {ctx.stage!r} expects exactly one input file, got {len(ctx.inputs)} ({names}); "
            "give the app a single input file, e.g. from `sonic workloads gen`"
        )
    return ctx.inputs[0]


def single_app_input(input_path: Path, app: str) -> Path:
    """The one file of an app input that must be a single self-describing file."""
    files = input_files(Path(input_path))
    if len(files) != 1:
        raise ValueError(f"{app} input must be one file, got {len(files)} files in {input_path}")
    return files[0]
