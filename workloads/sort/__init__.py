"""MapReduce sort of gensort-format records: ``split -> map -> reduce``.

Input: one file of 100-byte records as written by gensort's binary mode: a 10-byte random key,
``00 11``, the record number as 32 ASCII hex digits, ``88 99 AA BB``, 48 filler bytes (12 runs of
4 identical hex digits) and ``CC DD EE FF``.

Stages:

* ``split`` (1 instance) cuts the input into M chunks of whole records, named
  ``chunk-0000-of-0012``; the total M travels in the name because a mapper sees only its chunk.
* ``map`` (scatter over chunks, M instances) range-partitions its chunk by the first 4 key bytes
  into R files ``part-0000`` ... ``part-{R-1}`` (always all R, empty or not, so every
  reducer exists whatever the data).
* ``reduce`` (scatter by name, R instances) receives ``part-r`` from every mapper, sorts by the
  full 10-byte key and writes ``sorted-r``.

``map`` and ``reduce`` are elastic (``parallelism=(1, 256)``): with a plan, M and R are the
counts it chose (``ctx.partitions_for``); without one, M = R = ceil(size / CHUNK_BYTES), so the
shuffle moves M x R objects. The validator streams the outputs in name order and checks global key order,
the record count and an order-independent checksum against the input (like gensort's valsort).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

import sonic
from sonic import Context, Validation
from sonic.errors import InputFormatError

APP = sonic.App("sort")

RECORD_BYTES = 100
KEY_BYTES = 10
#: Target chunk size of ``split``; a multiple of RECORD_BYTES so chunks hold whole records.
CHUNK_BYTES = 4_000_000
#: Records generated / hashed / validated per block: bounds memory for any input size.
BLOCK_RECORDS = 65_536

_CHUNK_RE = re.compile(r"^chunk-(\d{4,})-of-(\d{4,})$")
_PART_RE = re.compile(r"^part-(\d{4,})$")
_HEX = np.frombuffer(b"0123456789ABCDEF", dtype=np.uint8)

# Odd 64-bit multipliers (one per 4-byte word of a record) for the per-record hash; odd so that
# any change to one word changes the weighted sum (odd numbers are invertible mod 2**64).
_WORD_WEIGHTS = (
    np.random.default_rng(0x5EED_5041).integers(0, 2**63, size=RECORD_BYTES // 4, dtype=np.uint64) * np.uint64(2)
    + np.uint64(1)
)

assert CHUNK_BYTES % RECORD_BYTES == 0


# --------------------------------------------------------------------------- record helpers
def _input_files(path: Path) -> list[Path]:
    """The application input as the executors see it: a file, or every file of a directory."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.is_file())


def _check_record_multiple(path: Path, size: int) -> None:
    if size % RECORD_BYTES:
        raise InputFormatError(
            f"{path.name}: {size} bytes is not a whole number of {RECORD_BYTES}-byte gensort records; "
            "regenerate the input with `sonic workloads gen sort`"
        )


def _iter_blocks(files: list[Path], block_records: int = BLOCK_RECORDS) -> Iterator[np.ndarray]:
    """Yield ``(n, 100)`` uint8 record blocks of ``files`` in order, never the whole file at once."""
    block_bytes = block_records * RECORD_BYTES
    for path in files:
        _check_record_multiple(path, path.stat().st_size)
        with path.open("rb") as fh:
            while raw := fh.read(block_bytes):
                yield np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD_BYTES)


def _read_records(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    _check_record_multiple(path, len(raw))
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD_BYTES)


def _sort_keys(records: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split the 10-byte keys into (first 8 bytes as big-endian u64, last 2 as big-endian u16).

    Comparing (hi, lo) lexicographically equals comparing the keys bytewise (memcmp order).
    """
    keys = np.ascontiguousarray(records[:, :KEY_BYTES])
    hi = keys[:, :8].copy().view(">u8").ravel().astype(np.uint64)
    lo = keys[:, 8:].copy().view(">u2").ravel().astype(np.uint16)
    return hi, lo


def record_checksum(records: np.ndarray) -> int:
    """Order-independent checksum of a block: the sum mod 2**64 of a 64-bit hash per record.

    Same role as valsort's sum of per-record CRC32s, vectorised: a weighted word sum followed
    by the murmur3 finaliser, so a change anywhere in a record changes its hash.
    """
    if len(records) == 0:
        return 0
    words = np.ascontiguousarray(records).view("<u4").astype(np.uint64)
    h = (words * _WORD_WEIGHTS).sum(axis=1, dtype=np.uint64)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return int(h.sum(dtype=np.uint64))


def _make_records(first: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """Records ``first .. first+count-1`` in gensort's binary layout with keys from ``rng``."""
    rec = np.empty((count, RECORD_BYTES), dtype=np.uint8)
    rec[:, :KEY_BYTES] = np.frombuffer(rng.bytes(count * KEY_BYTES), dtype=np.uint8).reshape(count, KEY_BYTES)
    rec[:, 10:12] = (0x00, 0x11)
    index = np.arange(first, first + count, dtype=np.uint64)
    # 32 hex digits of a 128-bit record number: the top 16 are always zero for < 2**64 records.
    shifts = np.arange(60, -4, -4, dtype=np.uint64)
    nibbles = ((index[:, None] >> shifts) & np.uint64(0xF)).astype(np.intp)
    rec[:, 12:28] = ord("0")
    rec[:, 28:44] = _HEX[nibbles]
    rec[:, 44:48] = (0x88, 0x99, 0xAA, 0xBB)
    # Filler: 12 runs of 4 identical hex digits, taken from the record number's low nibbles.
    rec[:, 48:96] = np.repeat(_HEX[nibbles[:, 4:]], 4, axis=1)
    rec[:, 96:100] = (0xCC, 0xDD, 0xEE, 0xFF)
    return rec


def num_chunks(total_bytes: int) -> int:
    """Map fanout M (= reduce fanout R) for an input of ``total_bytes`` when no plan chose them."""
    return max(1, math.ceil(total_bytes / CHUNK_BYTES))


#: Instance counts the planner may choose for ``map`` and ``reduce``.
PARALLELISM = (1, 256)


# --------------------------------------------------------------------------- generator
@APP.generate_input
def gen(path: Path, size_bytes: int, seed: int) -> None:
    """Write ``max(1, size_bytes // 100)`` gensort records with uniform random keys to ``path``."""
    n = max(1, size_bytes // RECORD_BYTES)
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        for first in range(0, n, BLOCK_RECORDS):
            # Block boundaries are fixed (not size-dependent), so a prefix of a larger input
            # with the same seed is identical to the smaller input.
            _make_records(first, min(BLOCK_RECORDS, n - first), rng).tofile(fh)


@APP.input_features
def features(path: Path) -> dict[str, float]:
    total = sum(p.stat().st_size for p in _input_files(Path(path)))
    return {"records": float(total // RECORD_BYTES)}


# --------------------------------------------------------------------------- stages
def chunk_bounds(total_bytes: int, m: int) -> list[int]:
    """Byte offsets of the ``m + 1`` chunk boundaries: ``m`` chunks of whole records whose sizes
    differ by at most one record (chunks are empty only when there are fewer records than m)."""
    records = total_bytes // RECORD_BYTES
    return [(i * records // m) * RECORD_BYTES for i in range(m + 1)]


@APP.stage()
def split(ctx: Context) -> None:
    """Cut the input into M chunk files: the plan's count for ``map``, else ``num_chunks``."""
    files = list(ctx.inputs)
    total = 0
    for path in files:
        size = path.stat().st_size
        _check_record_multiple(path, size)
        total += size
    m = ctx.partitions_for("map") or num_chunks(total)
    bounds = chunk_bounds(total, m)
    width = max(4, len(str(m)))
    chunk, written = 0, 0
    out = ctx.output(f"chunk-{chunk:0{width}d}-of-{m:0{width}d}").open("wb")
    try:
        for path in files:
            with path.open("rb") as src:
                # Copy in bounded pieces (never a whole chunk in memory); a chunk may span files.
                while True:
                    while chunk + 1 < m and written == bounds[chunk + 1]:
                        out.close()
                        chunk += 1
                        out = ctx.output(f"chunk-{chunk:0{width}d}-of-{m:0{width}d}").open("wb")
                    want = min(CHUNK_BYTES, (bounds[chunk + 1] - written) if chunk + 1 < m else CHUNK_BYTES)
                    raw = src.read(want)
                    if not raw:
                        break
                    out.write(raw)
                    written += len(raw)
        while chunk + 1 < m:  # fewer records than chunks: the rest are empty
            out.close()
            chunk += 1
            out = ctx.output(f"chunk-{chunk:0{width}d}-of-{m:0{width}d}").open("wb")
    finally:
        out.close()


@APP.stage("map", after="split", pattern="scatter", parallelism=PARALLELISM)
def map_partition(ctx: Context) -> None:
    """Range-partition one chunk by key into R files ``part-XXXX``."""
    match = _CHUNK_RE.match(ctx.key or "")
    if match is None:
        raise ValueError(f"map got scatter key {ctx.key!r}; expected a chunk name like chunk-0000-of-0012")
    # R: the plan's count for reduce, else as many as there are mappers.
    r = ctx.partitions_for("reduce") or int(match.group(2))
    # Scatter from the single split instance: exactly one chunk file per mapper.
    records = np.concatenate([_read_records(p) for p in ctx.inputs])
    # Keys are uniform, so equal slices of the 32-bit prefix space give balanced reducers;
    # floor(prefix * R / 2**32) is monotone in the key, which makes the partitions ranges.
    prefix = records[:, :4].copy().view(">u4").ravel().astype(np.uint64)
    part = ((prefix * np.uint64(r)) >> np.uint64(32)).astype(np.intp)
    order = np.argsort(part, kind="stable")
    bounds = np.searchsorted(part[order], np.arange(r + 1))
    grouped = records[order]
    width = max(4, len(str(r)))
    for i in range(r):
        # Empty partitions are still written so the reduce fanout is always exactly R.
        grouped[bounds[i]:bounds[i + 1]].tofile(ctx.output(f"part-{i:0{width}d}"))


@APP.stage("reduce", after="map", pattern="scatter", parallelism=PARALLELISM)
def reduce_sort(ctx: Context) -> None:
    """Sort every record of one key range (``part-r`` from all mappers) and write ``sorted-r``."""
    match = _PART_RE.match(ctx.key or "")
    if match is None:
        raise ValueError(f"reduce got scatter key {ctx.key!r}; expected a partition name like part-0003")
    parts = [_read_records(p) for p in ctx.inputs]
    records = np.concatenate(parts) if parts else np.empty((0, RECORD_BYTES), dtype=np.uint8)
    hi, lo = _sort_keys(records)
    order = np.lexsort((lo, hi))
    records[order].tofile(ctx.output(f"sorted-{match.group(1)}"))


# --------------------------------------------------------------------------- validator
@APP.validate_output
def validate(input_path: Path, outputs: list[Path]) -> Validation:
    """Outputs in name order are globally sorted and hold exactly the input's records."""
    in_files = _input_files(Path(input_path))
    in_count, in_sum = 0, 0
    for block in _iter_blocks(in_files):
        in_count += len(block)
        in_sum = (in_sum + record_checksum(block)) % 2**64
    out_files = sorted((Path(p) for p in outputs), key=lambda p: p.name)
    if not out_files:
        return Validation(False, "no output files")
    out_count, out_sum = 0, 0
    prev: tuple[int, int] | None = None
    for path in out_files:
        size = path.stat().st_size
        if size % RECORD_BYTES:
            return Validation(False, f"{path.name}: {size} bytes is not a multiple of {RECORD_BYTES}")
        for block in _iter_blocks([path]):
            if len(block) == 0:
                continue
            hi, lo = _sort_keys(block)
            # Pairwise check inside the block, then the seam with the previous block/file.
            descending = (hi[1:] < hi[:-1]) | ((hi[1:] == hi[:-1]) & (lo[1:] < lo[:-1]))
            if descending.any():
                at = out_count + int(np.argmax(descending)) + 1
                return Validation(False, f"{path.name}: record {at} (global) has a smaller key than its predecessor")
            first = (int(hi[0]), int(lo[0]))
            if prev is not None and first < prev:
                return Validation(False, f"{path.name}: key at record {out_count} is smaller than the one before it")
            prev = (int(hi[-1]), int(lo[-1]))
            out_count += len(block)
            out_sum = (out_sum + record_checksum(block)) % 2**64
    if out_count != in_count:
        return Validation(False, f"outputs hold {out_count} records, input holds {in_count}")
    if out_sum != in_sum:
        return Validation(False, f"checksum mismatch: outputs {out_sum:016x}, input {in_sum:016x}")
    return Validation(True, f"{out_count} records in {len(out_files)} files, sorted, checksum {out_sum:016x}")
