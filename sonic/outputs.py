"""Final outputs of ``sonic run``: collected into ``-o DIR`` / ``--keep DIR`` for every
executor, or, without it, shown when small and otherwise said to be dropped.

Layout of DIR, the same for the reference executor and clusters:
``DIR/<sink stage>/<instance>/<output name>``. DIR must be new or empty, so a run never mixes
its files with an older run's; a run that fails before its outputs are collected leaves DIR
empty.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sonic.errors import UserInputError
from sonic.sizes import format_size

# Shown inline without -o: a handful of short text files (a count, a total, a label).
PREVIEW_MAX_FILES = 5
PREVIEW_MAX_BYTES = 200


@dataclass(frozen=True)
class OutputTarget:
    """Where a run's final outputs go; ``kept`` says whether the user asked to keep them."""

    directory: Path
    kept: bool


def check_output_dir(path: Path) -> Path:
    """``-o DIR`` must be a new or empty directory (one line with the fix otherwise)."""
    if path.exists() and not path.is_dir():
        raise UserInputError(f"-o/--keep {path} is a file; give a directory for the outputs")
    if path.is_dir() and any(path.iterdir()):
        raise UserInputError(f"-o/--keep {path} is not empty; give a new directory or empty this one")
    return path


@contextmanager
def output_target(keep: Path | None) -> Iterator[OutputTarget]:
    """The directory to collect into: ``keep`` (checked, created), else a temporary one that
    is removed when the block ends."""
    if keep is not None:
        check_output_dir(keep).mkdir(parents=True, exist_ok=True)
        yield OutputTarget(keep.resolve(), True)
        return
    scratch = Path(tempfile.mkdtemp(prefix="sonic-outputs-"))
    try:
        yield OutputTarget(scratch, False)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def collect_reference_outputs(outputs: Sequence[str], workdir: Path, target: Path) -> list[Path]:
    """Copy the reference executor's final outputs (``workdir/<sink>/<i>/out/<name>``) into
    ``target`` with the common layout; returns the new paths."""
    collected: list[Path] = []
    for source in map(Path, outputs):
        sink, instance, _, name = source.relative_to(workdir).parts[-4:]
        dest = target / sink / instance / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
        collected.append(dest)
    return collected


def describe(outputs: Sequence[str], target: OutputTarget) -> list[str]:
    """Lines for the human report: where the outputs are, or their content when small."""
    files = [Path(p) for p in outputs if Path(p).is_file()]
    total = sum(p.stat().st_size for p in files)
    if target.kept:
        return [f"outputs: {len(files)} file(s), {format_size(total)} in {target.directory}"]
    small = len(files) <= PREVIEW_MAX_FILES and all(p.stat().st_size <= PREVIEW_MAX_BYTES for p in files)
    if files and small:
        lines = []
        for path in files:
            text = path.read_bytes().decode("utf-8", errors="replace").strip()
            if not text.isprintable():
                break
            lines.append(f"  {path.relative_to(target.directory).as_posix()}: {text}")
        else:
            return ["outputs:", *lines]
    return [f"outputs: {len(files)} file(s), {format_size(total)}, not kept; pass -o DIR to keep them"]
