"""A small valid app: split -> (scatter) upper -> (gather) combine, with generator and validator.

``split`` cuts the input into 3 roughly equal chunks (``chunk-0`` .. ``chunk-2``), ``upper``
upper-cases its chunk, ``combine`` concatenates the chunks in name order into ``result``.
"""

from __future__ import annotations

from pathlib import Path

import sonic
from sonic import Context, Validation

APP = sonic.App("good")
NCHUNKS = 3


@APP.stage()
def split(ctx: Context) -> None:
    data = b"".join(p.read_bytes() for p in ctx.inputs)
    step = -(-len(data) // NCHUNKS) or 1
    for i in range(NCHUNKS):
        ctx.output(f"chunk-{i}").write_bytes(data[i * step:(i + 1) * step])


@APP.stage(after="split", pattern="scatter")
def upper(ctx: Context) -> None:
    (chunk,) = ctx.inputs
    ctx.output(f"up-{ctx.key}").write_bytes(chunk.read_bytes().upper())


@APP.stage(after="upper", pattern="gather")
def combine(ctx: Context) -> None:
    parts = sorted(ctx.inputs, key=lambda p: p.name)
    ctx.output("result").write_bytes(b"".join(p.read_bytes() for p in parts))


@APP.generate_input
def generate(path: Path, size: int, seed: int) -> None:
    line = b"hello sonic %d\n" % seed
    path.write_bytes((line * (size // len(line) + 1))[:size])


@APP.validate_output
def validate(input_path: Path, outputs: list[Path]) -> Validation:
    (out,) = outputs
    ok = out.read_bytes() == input_path.read_bytes().upper()
    return Validation(ok, "upper-cased copy" if ok else "output differs from upper-cased input")


def make_app() -> sonic.App:
    """A factory: load_app calls a callable attribute that is not an App."""
    return APP
