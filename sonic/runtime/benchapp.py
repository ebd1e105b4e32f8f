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


def burn_cpu(rounds: int) -> float:
    """A fixed CPU workload (interpreter loop and small numpy kernels, as stage code mixes them);
    returns a value that depends on every round so nothing is skipped."""
    import numpy as np

    acc, block = 0.0, np.arange(4096, dtype=np.float64)
    for i in range(rounds):
        acc += float(np.sort(block * ((i % 7) + 1.0))[-1])
        acc += sum(j * j for j in range(200)) % 97
    return acc


spin = sonic.App("spin")


@spin.stage()
def deal(ctx: sonic.Context) -> None:
    """One part per ``burn`` instance; a part's text is the rounds it burns."""
    count, rounds = ctx.inputs[0].read_text().split()
    for i in range(int(count)):
        ctx.output(f"part-{i:05d}").write_text(rounds)


@spin.stage(after="deal", pattern="scatter")
def burn(ctx: sonic.Context) -> None:
    """Burns the CPU for as many rounds as its part says (calibration's compute factor)."""
    ctx.output("done").write_text(repr(burn_cpu(int(ctx.inputs[0].read_text()))))
