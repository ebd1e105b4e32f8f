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


fan = sonic.App("fan")


@fan.stage()
def spread(ctx: sonic.Context) -> None:
    """Writes as many 1-byte outputs as the input file's text says: one per ``touch`` instance."""
    for i in range(int(ctx.inputs[0].read_text())):
        ctx.output(f"part-{i:05d}").write_bytes(b"x")


@fan.stage(after="spread", pattern="scatter")
def touch(ctx: sonic.Context) -> None:
    """Reads its 1-byte part and writes one back: a job's dispatch cycle with nothing inside."""
    ctx.output("done").write_bytes(ctx.inputs[0].read_bytes())
