"""Tiny apps the benchmarks and calibration run on agents (importable everywhere Sonic is)."""

from __future__ import annotations

import sonic

noop = sonic.App("noop")


@noop.stage()
def nothing(ctx: sonic.Context) -> None:
    """An empty function: its round trip is the agent's invocation overhead."""


files = sonic.App("files")


@files.stage()
def write_files(ctx: sonic.Context) -> None:
    """Writes ``int(ctx.key)`` outputs of 1 KB: calibration's per-object overhead."""
    block = b"x" * 1024
    for i in range(int(ctx.key or 0)):
        ctx.output(f"f-{i:05d}").write_bytes(block)
