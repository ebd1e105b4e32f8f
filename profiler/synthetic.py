"""Small synthetic applications with known behaviour, for tests, docs and benchmarks.

``CHAIN``: split (source) -> work (scatter, one instance per 64 KiB chunk) -> merge (gather).
``work`` does CPU work proportional to its input (repeated hashing: no sleeps, so its time
is real compute), holds two copies of its input (memory grows with input) and writes half
of its input. ``FEATURED`` is the same DAG whose input declares a ``complexity`` feature
(1-4, set by the seed) that multiplies the work: size alone cannot predict it.
``CRASHY``'s ``work`` stage fails on inputs above 100 kB.

:func:`simulate_profile` makes profile tables of an app whose stages follow known
functions (:class:`Behaviour`), without running anything: ground truth for model tests and
benchmarks.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from profiler.schema import run_to_frame
from sonic.app import App, Context, Pattern
from sonic.metrics import InstanceMetrics, RunResult, StageMetrics

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
    complexity = int(ctx.key.rsplit("-c", 1)[1]) if ctx.key and "-c" in ctx.key else 1
    _work(ctx, 20 * complexity)


def _featured_split(ctx: Context) -> None:
    data = b"".join(p.read_bytes() for p in ctx.inputs)
    c = _complexity(data)
    for i in range(0, max(len(data), 1), CHUNK):
        ctx.output(f"chunk-{i // CHUNK:05d}-c{c}").write_bytes(data[i:i + CHUNK])


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


# --------------------------------------------------------------------------- simulated profiles
@dataclass(frozen=True)
class Behaviour:
    """Ground truth of one stage for :func:`simulate_run`: per-instance functions of the
    instance input bytes ``x`` (and the app input bytes ``a`` and features ``f``) and, for a
    scatter-driven stage, the fanout as a function of ``a``."""

    time: Callable[[float, float, dict[str, float]], float]
    memory: Callable[[float, float, dict[str, float]], float]
    output: Callable[[float, float, dict[str, float]], float]
    fanout: Callable[[float, dict[str, float]], int] | None = None


def simulate_run(app: App, behaviour: dict[str, Behaviour], input_bytes: int,
                 features: dict[str, float] | None = None, *, noise: float = 0.0,
                 rng: random.Random | None = None) -> RunResult:
    """A :class:`RunResult` as the reference executor would report it if the stages
    behaved exactly as ``behaviour`` says (times multiplied by ``1 + U(0, noise)``:
    interference only ever adds time). Lets model tests know the truth."""
    rng = rng or random.Random(0)
    feats = dict(features or {})
    out_per_instance: dict[str, list[float]] = {}
    instances: list[InstanceMetrics] = []
    for name in app.topological_order():
        b = behaviour[name]
        in_edges = app.in_edges(name)
        driving = next((e for e in in_edges if e.pattern in (Pattern.SCATTER, Pattern.ONE_TO_ONE)), None)
        if driving is None:
            n = app.stages[name].instances
        elif driving.pattern is Pattern.ONE_TO_ONE:
            n = len(out_per_instance[driving.src])
        else:
            assert b.fanout is not None, f"scatter-driven stage {name} needs a fanout"
            n = max(1, int(b.fanout(float(input_bytes), feats)))
        inputs = [0.0] * n
        if not in_edges:
            inputs = [float(input_bytes)] * n
        for e in in_edges:
            produced = out_per_instance[e.src]
            for i in range(n):
                if e.pattern is Pattern.SCATTER:
                    inputs[i] += sum(produced) / n
                elif e.pattern is Pattern.ONE_TO_ONE:
                    inputs[i] += produced[i]
                else:
                    inputs[i] += sum(produced)
        outs = []
        for i, x in enumerate(inputs):
            a = float(input_bytes)
            wall = b.time(x, a, feats) * (1 + rng.uniform(0, noise))
            out = max(0.0, b.output(x, a, feats))
            outs.append(out)
            instances.append(InstanceMetrics(
                stage=name, instance=i, input_bytes=int(x), output_bytes=int(out), n_outputs=1,
                wall_s=wall, peak_memory_mb=b.memory(x, a, feats), own_memory_mb=b.memory(x, a, feats),
                started=0.0, ended=wall))
        out_per_instance[name] = outs
    stages = [StageMetrics(s, len(out_per_instance[s]), 0.0, 0.0) for s in app.topological_order()]
    return RunResult(app=app.name, strategy="reference", input_bytes=int(input_bytes), latency_s=0.0,
                     output_ok=True, output_detail="simulated", edges=[], stages=stages,
                     instances=instances, features=feats)


def simulate_profile(app: App, behaviour: dict[str, Behaviour], sizes: list[int], runs: int, *,
                     noise: float = 0.0, seed: int = 0,
                     features: Callable[[int, int], dict[str, float]] | None = None) -> pd.DataFrame:
    """A profile table of ``runs`` simulated runs per size (``features(size, run)``)."""
    rng = random.Random(seed)
    frames = [
        run_to_frame(simulate_run(app, behaviour, size, features(size, r) if features else None,
                                  noise=noise, rng=rng), size=size)
        for r in range(runs) for size in sizes
    ]
    return pd.concat(frames, ignore_index=True)


def chain_behaviour(*, complexity_feature: bool = False) -> dict[str, Behaviour]:
    """Ground truth shaped like :data:`CHAIN` (and :data:`FEATURED` with the feature)."""
    def work_time(x: float, a: float, f: dict[str, float]) -> float:
        return 0.001 + 2e-8 * x * (f.get("complexity", 1.0) if complexity_feature else 1.0)

    return {
        "split": Behaviour(time=lambda x, a, f: 0.002 + 1e-9 * x, memory=lambda x, a, f: 80 + x / 2**20,
                           output=lambda x, a, f: x),
        "work": Behaviour(time=work_time, memory=lambda x, a, f: 80 + 2 * x / 2**20,
                          output=lambda x, a, f: x / 2, fanout=lambda a, f: math.ceil(a / CHUNK)),
        "merge": Behaviour(time=lambda x, a, f: 0.001 + 5e-10 * x * math.log2(max(x, 2)),
                           memory=lambda x, a, f: 80 + x / 2**20, output=lambda x, a, f: x / 4),
    }
