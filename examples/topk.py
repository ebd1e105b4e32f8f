"""Top-k and histogram of a stream of integers: per-instance summaries of constant size.

Shape (unlike the built-ins, the scattered stage's output does not grow with its input)::

    split (1) --scatter--> summarise (N) --gather--> merge (1) --one-to-one--> report (1)

Input: raw little-endian ``uint32`` values (4 bytes each; a file, or a directory of such files
read in name order). ``generate_input`` writes ``size // 4`` uniform random values.

* ``split`` cuts the input into N = ceil(bytes / :data:`CHUNK_BYTES`) chunks of ~1 MB named
  ``chunk-0000`` ...; N grows with the input.
* ``summarise`` (one instance per chunk) writes ``summary-XXXX``: the chunk's value count, sum
  (mod 2**64), its :data:`TOP_K` largest values and a :data:`BINS`-bin histogram of the top
  byte. Every summary is exactly :data:`SUMMARY_BYTES` long whatever the chunk size, so the
  stage's output per instance is constant while its fanout grows, and the bytes reaching
  ``merge`` are N x SUMMARY_BYTES, a vanishing fraction of the input.
* ``merge`` combines the summaries into one (``merged``, same format, same size).
* ``report`` turns it into ``report.json``: count, sum, top values (descending), histogram and
  the p50/p90/p99 bins.

The validator recomputes count, sum, top-k and histogram from the input in bounded blocks and
compares them with ``report.json`` exactly.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import sonic
from examples._inputs import input_files

app = sonic.App("topk")
APP = app

VALUE_BYTES = 4
#: Target chunk size of ``split`` (a multiple of VALUE_BYTES).
CHUNK_BYTES = 1_000_000
#: Largest values every summary keeps.
TOP_K = 256
#: Histogram bins: one per value of the top byte.
BINS = 256
_BIN_SHIFT = 32 - 8
#: count, sum, number of valid top entries (uint64 each), then the top values and the bins.
SUMMARY_BYTES = 3 * 8 + TOP_K * VALUE_BYTES + BINS * 8
#: Values generated / validated per block (bounds memory for any input size).
BLOCK_VALUES = 1 << 18
QUANTILES = (0.5, 0.9, 0.99)
REPORT_NAME = "report.json"
_CHUNK_RE = re.compile(r"^chunk-(\d{4,})$")

assert CHUNK_BYTES % VALUE_BYTES == 0


@dataclass
class Summary:
    """Mergeable summary of a multiset of uint32 values."""

    count: int
    total: int  # sum mod 2**64
    top: np.ndarray  # uint32, descending, at most TOP_K
    histogram: np.ndarray  # uint64[BINS]

    @classmethod
    def of(cls, values: np.ndarray) -> Summary:
        values = values.astype(np.uint32, copy=False)
        return cls(
            count=int(values.size),
            total=int(values.astype(np.uint64).sum(dtype=np.uint64)),
            top=_largest(values, TOP_K),
            histogram=np.bincount(values >> _BIN_SHIFT, minlength=BINS).astype(np.uint64),
        )

    @classmethod
    def empty(cls) -> Summary:
        return cls(0, 0, np.empty(0, dtype=np.uint32), np.zeros(BINS, dtype=np.uint64))

    def merge(self, other: Summary) -> Summary:
        return Summary(
            count=self.count + other.count,
            total=(self.total + other.total) % 2**64,
            top=_largest(np.concatenate([self.top, other.top]), TOP_K),
            histogram=self.histogram + other.histogram,
        )

    def to_bytes(self) -> bytes:
        top = np.zeros(TOP_K, dtype="<u4")
        top[: self.top.size] = self.top  # zero padding keeps every summary the same size
        head = np.array([self.count, self.total, self.top.size], dtype="<u8")
        raw = head.tobytes() + top.tobytes() + self.histogram.astype("<u8").tobytes()
        assert len(raw) == SUMMARY_BYTES
        return raw

    @classmethod
    def from_bytes(cls, raw: bytes, name: str) -> Summary:
        if len(raw) != SUMMARY_BYTES:
            raise ValueError(f"summary {name} has {len(raw)} bytes, expected {SUMMARY_BYTES}")
        count, total, n_top = (int(x) for x in np.frombuffer(raw, dtype="<u8", count=3))
        if n_top > TOP_K:
            raise ValueError(f"summary {name} claims {n_top} top values, at most {TOP_K} fit")
        top = np.frombuffer(raw, dtype="<u4", count=TOP_K, offset=24)[:n_top].astype(np.uint32)
        hist = np.frombuffer(raw, dtype="<u8", count=BINS, offset=24 + TOP_K * VALUE_BYTES).astype(np.uint64)
        return cls(count, total, top, hist)


def _largest(values: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` largest of ``values`` (all if fewer), descending."""
    if values.size > k:
        values = np.partition(values, values.size - k)[values.size - k:]
    return np.sort(values)[::-1].astype(np.uint32)


def _check_value_multiple(path: Path, size: int) -> None:
    if size % VALUE_BYTES:
        raise ValueError(
            f"{path.name}: {size} bytes is not a whole number of {VALUE_BYTES}-byte uint32 values; "
            "regenerate the input with `sonic workloads gen examples.topk:app`"
        )


def _iter_values(files: list[Path]) -> Iterator[np.ndarray]:
    for path in files:
        _check_value_multiple(path, path.stat().st_size)
        with path.open("rb") as fh:
            while raw := fh.read(BLOCK_VALUES * VALUE_BYTES):
                yield np.frombuffer(raw, dtype="<u4")


def num_chunks(total_bytes: int) -> int:
    """Fanout of ``summarise`` for an input of ``total_bytes``."""
    return max(1, math.ceil(total_bytes / CHUNK_BYTES))


def summary_of_input(input_path: Path) -> Summary:
    """Ground truth, computed straight from the input in bounded blocks."""
    summary = Summary.empty()
    for block in _iter_values(input_files(Path(input_path))):
        summary = summary.merge(Summary.of(block))
    return summary


def quantile_bins(histogram: np.ndarray) -> dict[str, int]:
    """For each of QUANTILES, the histogram bin (top byte) holding that quantile."""
    cumulative = np.cumsum(histogram.astype(np.float64))
    total = float(cumulative[-1]) if cumulative.size else 0.0
    if total == 0:
        return {f"p{round(q * 100)}": 0 for q in QUANTILES}
    return {f"p{round(q * 100)}": int(np.searchsorted(cumulative, q * total)) for q in QUANTILES}


def report_of(summary: Summary) -> dict[str, object]:
    return {
        "app": "topk",
        "count": summary.count,
        "sum": summary.total,
        "top": [int(v) for v in summary.top],
        "histogram": [int(c) for c in summary.histogram],
        "quantile_bins": quantile_bins(summary.histogram),
    }


# --------------------------------------------------------------------------- generator
@app.generate_input
def generate(path: Path, size_bytes: int, seed: int) -> None:
    """Write ``max(1, size_bytes // 4)`` uniform random uint32 values to ``path``."""
    n = max(1, size_bytes // VALUE_BYTES)
    rng = np.random.default_rng(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        for first in range(0, n, BLOCK_VALUES):
            # Fixed block boundaries: a smaller input is a prefix of a larger one (same seed).
            count = min(BLOCK_VALUES, n - first)
            rng.integers(0, 2**32, size=count, dtype=np.uint32).astype("<u4").tofile(fh)


@app.input_features
def features(path: Path) -> dict[str, float]:
    total = sum(p.stat().st_size for p in input_files(Path(path)))
    return {"values": float(total // VALUE_BYTES), "chunks": float(num_chunks(total))}


# --------------------------------------------------------------------------- stages
@app.stage()
def split(ctx: sonic.Context) -> None:
    """Cut the input into ``num_chunks`` files of CHUNK_BYTES (the last one shorter)."""
    files = list(ctx.inputs)
    total = 0
    for path in files:
        size = path.stat().st_size
        _check_value_multiple(path, size)
        total += size
    m = num_chunks(total)
    chunk, filled = 0, 0
    out = ctx.output(f"chunk-{chunk:04d}").open("wb")
    try:
        for path in files:
            with path.open("rb") as src:
                # Bounded pieces; a chunk may span two input files.
                while raw := src.read(CHUNK_BYTES - filled):
                    out.write(raw)
                    filled += len(raw)
                    if filled == CHUNK_BYTES and chunk + 1 < m:
                        out.close()
                        chunk, filled = chunk + 1, 0
                        out = ctx.output(f"chunk-{chunk:04d}").open("wb")
    finally:
        out.close()


@app.stage(after="split", pattern="scatter")
def summarise(ctx: sonic.Context) -> None:
    """Summarise one chunk into exactly SUMMARY_BYTES."""
    match = _CHUNK_RE.match(ctx.key or "")
    if match is None:
        raise ValueError(f"summarise got scatter key {ctx.key!r}; expected a chunk name like chunk-0003")
    summary = Summary.empty()
    for block in _iter_values(list(ctx.inputs)):
        summary = summary.merge(Summary.of(block))
    ctx.output(f"summary-{match.group(1)}").write_bytes(summary.to_bytes())


@app.stage(after="summarise", pattern="gather")
def merge(ctx: sonic.Context) -> None:
    """Combine every chunk summary into one."""
    summary = Summary.empty()
    for path in ctx.inputs:
        summary = summary.merge(Summary.from_bytes(path.read_bytes(), path.name))
    ctx.output("merged").write_bytes(summary.to_bytes())


@app.stage(after="merge", pattern="one-to-one")
def report(ctx: sonic.Context) -> None:
    """Render the merged summary as ``report.json``."""
    if len(ctx.inputs) != 1:
        raise ValueError(f"report expects the one merged summary, got {len(ctx.inputs)} files")
    summary = Summary.from_bytes(ctx.inputs[0].read_bytes(), ctx.inputs[0].name)
    ctx.output(REPORT_NAME).write_text(json.dumps(report_of(summary), sort_keys=True))


# --------------------------------------------------------------------------- validator
@app.validate_output
def validate(input_path: Path, outputs: list[Path]) -> sonic.Validation:
    """``report.json`` equals the report recomputed from the input."""
    reports = [Path(p) for p in outputs if Path(p).name == REPORT_NAME]
    if len(reports) != 1 or len(outputs) != 1:
        return sonic.Validation(False, f"expected exactly one {REPORT_NAME} output, got {len(outputs)} files")
    try:
        got = json.loads(reports[0].read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return sonic.Validation(False, f"cannot read {REPORT_NAME}: {exc}")
    if not isinstance(got, dict):
        return sonic.Validation(False, f"{REPORT_NAME} is not a JSON object")
    want = report_of(summary_of_input(Path(input_path)))
    for key in ("count", "sum", "top", "histogram", "quantile_bins"):
        if got.get(key) != want[key]:
            shown = str(got.get(key))[:60]
            return sonic.Validation(False, f"{REPORT_NAME}: {key} is {shown}, expected {str(want[key])[:60]}")
    return sonic.Validation(True, f"count {want['count']}, top-{TOP_K}, {BINS}-bin histogram and sum match the input")
