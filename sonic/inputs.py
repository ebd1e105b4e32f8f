"""Generating application inputs (``sonic workloads gen``) safely."""

from __future__ import annotations

import os
from pathlib import Path

from sonic.app import App
from sonic.errors import UserInputError
from sonic.sizes import parse_size

MAX_GENERATED_BYTES = 64 * 1024**3


def generate_input(app: App, path: Path, size: str | int, *, seed: int = 0) -> Path:
    """Write an input of about ``size`` bytes for ``app`` at ``path``.

    The generator writes to a temporary name that is renamed into place only on success, so
    an interrupted or failing generation never leaves a half-written input behind.
    """
    nbytes = parse_size(size)
    if nbytes <= 0:
        raise UserInputError(f"--size must be positive, got {size!r}")
    if nbytes > MAX_GENERATED_BYTES:
        raise UserInputError(f"--size {size} is above the {MAX_GENERATED_BYTES // 1024**3} GiB generator limit")
    if app.generator is None:
        raise UserInputError(f"app {app.name!r} has no input generator; register one with @app.generate_input")
    path = Path(path)
    if path.exists() and path.is_dir():
        raise UserInputError(f"output {path} is a directory; give a file path such as {path / (app.name + '.in')}")
    if not path.parent.exists():
        raise UserInputError(f"directory {path.parent} does not exist; create it first")
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        app.generator(tmp, nbytes, seed)
        if not tmp.exists():
            raise UserInputError(f"the {app.name} generator wrote nothing at {tmp}")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
