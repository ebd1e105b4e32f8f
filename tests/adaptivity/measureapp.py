"""A two-stage app whose instances use a known amount of memory and CPU, for checking that
the profiler and a cluster measure the same thing. Loaded by agents as
``tests.adaptivity.measureapp:APP`` (the project root is on every agent's path).

The input is a text file holding ``MB SPIN`` (megabytes to touch, busy-loop iterations)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import sonic

APP = sonic.App("measureapp")


def _work(text: str) -> tuple[int, int]:
    mb, spin = (int(v) for v in text.split())
    return mb, spin


def _burn(mb: int, spin: int) -> int:
    block = np.ones(mb * (1 << 20) // 8)  # touches mb MiB
    total = 0
    for i in range(spin):
        total += i % 7
    return int(block[: 1 + total % 3].sum())


@APP.stage()
def source(ctx: sonic.Context) -> None:
    text = ctx.inputs[0].read_text()
    mb, spin = _work(text)
    _burn(mb, spin)
    for i in range(2):
        ctx.output(f"part-{i}").write_text(text)


@APP.stage(after="source", pattern="scatter")
def heavy(ctx: sonic.Context) -> None:
    mb, spin = _work(ctx.inputs[0].read_text())
    ctx.output("done").write_text(str(_burn(mb, spin)))


@APP.validate_output
def validate(input_path: Path, outputs: list[Path]) -> sonic.Validation:
    ok = len(outputs) == 2 and all(p.read_text().strip().isdigit() for p in outputs)
    return sonic.Validation(ok, f"{len(outputs)} outputs")
