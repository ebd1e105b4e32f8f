"""Small synthetic applications with known behaviour, for tests, docs and benchmarks.

``CHAIN``: split (source) -> work (scatter, one instance per 64 KiB chunk) -> merge (gather).
``work`` does CPU work proportional to its input (repeated hashing: no sleeps, so its time
is real compute), holds two copies of its input (memory grows with input) and writes half
of its input. ``FEATURED`` is the same DAG whose input declares a ``complexity`` feature
(1-4, set by the seed) that multiplies the work: size alone cannot predict it.
``CRASHY``'s ``work`` stage fails on inputs above 100 kB.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from sonic.app import App, Context

CHUNK = 64 * 1024
HEADER = 8  # FEATURED inputs start with an 8-byte ASCII complexity field


def _generate(path: Path, size: int, seed: int) -> None:
    path.write_bytes(random.Random(seed).randbytes(size))


def _split(ctx: Context) -> None:
    data = b"".join(p.read_bytes() for p in ctx.inputs)
    for i in range(0, max(len(data), 1), CHUNK):
        ctx.output(f"chunk-{i // CHUNK:05d}").write_bytes(data[i:i + CHUNK])


def _burn(data: bytes, rounds: int) -> bytes:
    digest = b""
    for _ in range(rounds):
        digest = hashlib.sha256(data + digest).digest()
    return digest


def _work(ctx: Context, rounds: int) -> None:
    data = b"".join(p.read_bytes() for p in ctx.inputs)
    copy = bytearray(data) * 2  # memory in proportion to the input
    _burn(data, rounds)
    ctx.output("part").write_bytes(bytes(copy[: len(data) // 2]))


def _merge(ctx: Context) -> None:
    data = b"".join(p.read_bytes() for p in ctx.inputs)
    _burn(data, 2)
    ctx.output("result").write_bytes(data[: len(data) // 4])


def _build(name: str) -> App:
    app = App(name)
    app.add_stage(_split, name="split")
    app.add_stage(_merge, name="merge", after="work", pattern="gather")
    app.generate_input(_generate)
    return app


CHAIN = _build("chain")
CHAIN.add_stage(lambda ctx: _work(ctx, 40), name="work", after="split", pattern="scatter")
CHAIN.validate()


def _complexity(data: bytes) -> int:
    return int(data[:HEADER].decode("ascii").strip())


def _featured_generate(path: Path, size: int, seed: int) -> None:
    complexity = 1 + seed % 4
    body = random.Random(seed).randbytes(max(size - HEADER, 0))
    path.write_bytes(f"{complexity:<{HEADER}d}".encode("ascii") + body)


def _featured_work(ctx: Context) -> None:
    complexity = int(ctx.key.split("@")[1]) if ctx.key and "@" in ctx.key else 1
    _work(ctx, 20 * complexity)


def _featured_split(ctx: Context) -> None:
    data = b"".join(p.read_bytes() for p in ctx.inputs)
    c = _complexity(data)
    for i in range(0, max(len(data), 1), CHUNK):
        ctx.output(f"chunk-{i // CHUNK:05d}@{c}").write_bytes(data[i:i + CHUNK])


FEATURED = App("featured")
FEATURED.add_stage(_featured_split, name="split")
FEATURED.add_stage(_featured_work, name="work", after="split", pattern="scatter")
FEATURED.add_stage(_merge, name="merge", after="work", pattern="gather")
FEATURED.generate_input(_featured_generate)
FEATURED.input_features(lambda path: {"complexity": float(_complexity(path.read_bytes()[:HEADER]))})
FEATURED.validate()


def _crashy_work(ctx: Context) -> None:
    if sum(p.stat().st_size for p in ctx.inputs) > 100_000:
        raise RuntimeError("input too large for this stage")
    _work(ctx, 2)


CRASHY = App("crashy")
CRASHY.add_stage(lambda ctx: ctx.output("all").write_bytes(b"".join(p.read_bytes() for p in ctx.inputs)),
                 name="load")
CRASHY.add_stage(_crashy_work, name="work", after="load", pattern="one-to-one")
CRASHY.generate_input(_generate)
CRASHY.validate()
