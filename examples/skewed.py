"""Per-tenant tallies whose fanout depends on the input's *content*: test material for re-planning.

Shape::

    partition (1) --scatter--> sort_keys (T) --one-to-one--> tally (T) --gather--> combine (1)

Input: one binary file (``generate_input``): a 16-byte header (``b"SKW1"``, ``uint32`` tenant
count the generator used, ``uint64`` record count n), then n records (:data:`RECORD_DTYPE`:
``tenant``, ``key``, ``value``; 16 bytes each).

* ``partition`` reads the records in blocks and writes one file ``tenant-XXXXX`` per distinct
  tenant *found in the data* (it never trusts the header). The fanout T of ``tally`` is
  therefore the number of tenants in the input, which the input size does not determine.
* ``sort_keys`` (one instance per tenant) sorts its tenant's records by key into
  ``sorted-XXXXX`` (as many bytes as it read: the edge to ``tally`` carries the whole input).
* ``tally`` (one-to-one) checks the order and writes ``tally-XXXXX`` (JSON): record count, sum
  of values, XOR of keys and the median key (lower median) of its tenant.
* ``combine`` gathers them into ``tallies.json`` keyed by tenant id.

The validator recomputes every tenant's tally from the input and compares exactly.

How many tenants the generator writes
-------------------------------------
Normally T = :func:`normal_tenants` (size) = max(1, ceil(size / :data:`TENANT_BYTES`)), i.e. one
tenant per 500 kB: 1 tenant for inputs up to 500 kB, 2 at 1 MB, 8 at 4 MB, 64 at 32 MB. So a
profile (any seed the profiler uses: ``seed + run``, 0, 1, 2, ... and the experiments' 101,
202) teaches the models "fanout = ceil(size / 500 kB)".

**Mispredicted inputs**: a seed with ``seed % 1000 == 777`` (:data:`SKEW_SEED`; i.e. 777, 1777,
2777, ...) writes :data:`SKEW_FACTOR` = 4 times as many tenants at the same size: 4 at 500 kB,
8 at 1 MB, 32 at 4 MB, 256 at 32 MB. Every ``sort_keys`` and ``tally`` instance then reads a
quarter of the bytes the models predict and there are 4x as many of them. For example::

    sonic workloads gen examples.skewed:app --size 4MB --seed 777 -o skewed-4MB.in   # T = 32
    sonic workloads gen examples.skewed:app --size 4MB --seed 0   -o normal-4MB.in   # T = 8

The feature hook deliberately reports only the record count (a size proxy): the tenant count
is exactly what the models must *not* see, so that only observing ``partition``'s outputs
mid-job can reveal the real fanout.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

import sonic
from examples._inputs import single_app_input, single_input

app = sonic.App("skewed")
APP = app

MAGIC = b"SKW1"
HEADER_BYTES = 16
RECORD_DTYPE = np.dtype([("tenant", "<u4"), ("key", "<u4"), ("value", "<u8")])
#: Input bytes per tenant for ordinary seeds.
TENANT_BYTES = 500_000
#: Seeds with ``seed % 1000 == SKEW_SEED`` get SKEW_FACTOR times more tenants.
SKEW_SEED = 777
SKEW_FACTOR = 4
MAX_VALUE = 1 << 20
#: Records read / generated / validated per block (bounds memory for any input size).
BLOCK_RECORDS = 1 << 17
RESULT_NAME = "tallies.json"
_TENANT_RE = re.compile(r"^tenant-(\d{5,})$")
_SORTED_RE = re.compile(r"^sorted-(\d{5,})$")


def is_skewed_seed(seed: int) -> bool:
    return seed % 1000 == SKEW_SEED


def normal_tenants(size_bytes: int) -> int:
    """Tenants (= fanout of ``sort_keys`` and ``tally``) the generator writes for an ordinary seed."""
    return max(1, math.ceil(size_bytes / TENANT_BYTES))


def tenants_for(size_bytes: int, seed: int) -> int:
    """Tenants the generator writes for ``size_bytes`` and ``seed`` (see the module doc)."""
    return normal_tenants(size_bytes) * (SKEW_FACTOR if is_skewed_seed(seed) else 1)


# --------------------------------------------------------------------------- input format
def read_header(path: Path) -> tuple[int, int]:
    """``(tenants declared, records)`` of an input, after checking magic and length."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(HEADER_BYTES)
    if len(head) < HEADER_BYTES or head[:4] != MAGIC:
        raise ValueError(
            f"{path.name} is not a skewed-app input (no {MAGIC!r} header); "
            "generate one with `sonic workloads gen examples.skewed:app`"
        )
    tenants = int(np.frombuffer(head, dtype="<u4", count=1, offset=4)[0])
    records = int(np.frombuffer(head, dtype="<u8", count=1, offset=8)[0])
    expected = HEADER_BYTES + records * RECORD_DTYPE.itemsize
    if size != expected:
        raise ValueError(f"{path.name}: header says {records} records ({expected} bytes), file has {size}")
    return tenants, records


def iter_records(path: Path, block_records: int = BLOCK_RECORDS) -> Iterator[np.ndarray]:
    _, records = read_header(path)
    for first in range(0, records, block_records):
        count = min(block_records, records - first)
        yield np.fromfile(path, dtype=RECORD_DTYPE, count=count, offset=HEADER_BYTES + first * RECORD_DTYPE.itemsize)


def tenant_name(tenant: int) -> str:
    return f"tenant-{tenant:05d}"


class Tally:
    """Accumulates count, value sum, key XOR and the keys (for the median) per tenant."""

    def __init__(self) -> None:
        self.by_tenant: dict[int, list[int]] = {}
        self._keys: dict[int, list[np.ndarray]] = {}

    def add(self, records: np.ndarray) -> None:
        if records.size == 0:
            return
        tenants, inverse = np.unique(records["tenant"], return_inverse=True)
        counts = np.bincount(inverse, minlength=tenants.size)
        sums = np.zeros(tenants.size, dtype=np.uint64)
        np.add.at(sums, inverse, records["value"])
        xors = np.zeros(tenants.size, dtype=np.uint32)
        np.bitwise_xor.at(xors, inverse, records["key"])
        keys_by_tenant = np.split(records["key"][np.argsort(inverse, kind="stable")], np.cumsum(counts)[:-1])
        for t, c, s, x, keys in zip(tenants.tolist(), counts.tolist(), sums.tolist(), xors.tolist(), keys_by_tenant):
            entry = self.by_tenant.setdefault(int(t), [0, 0, 0])
            entry[0] += int(c)
            entry[1] += int(s)
            entry[2] ^= int(x)
            self._keys.setdefault(int(t), []).append(keys)

    def median_key(self, tenant: int) -> int:
        keys = np.sort(np.concatenate(self._keys[tenant]))
        return int(keys[(keys.size - 1) // 2])

    def as_json(self) -> dict[str, dict[str, int]]:
        return {str(t): {"count": c, "value_sum": s, "key_xor": x, "median_key": self.median_key(t)}
                for t, (c, s, x) in sorted(self.by_tenant.items())}


# --------------------------------------------------------------------------- generator
@app.generate_input
def generate(path: Path, size_bytes: int, seed: int) -> None:
    """Write ``tenants_for(size_bytes, seed)`` tenants' records filling about ``size_bytes``."""
    tenants = tenants_for(size_bytes, seed)
    records = max(tenants, (size_bytes - HEADER_BYTES) // RECORD_DTYPE.itemsize)
    rng = np.random.default_rng(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        fh.write(MAGIC + np.array([tenants], "<u4").tobytes() + np.array([records], "<u8").tobytes())
        for first in range(0, records, BLOCK_RECORDS):
            count = min(BLOCK_RECORDS, records - first)
            block = np.empty(count, dtype=RECORD_DTYPE)
            block["tenant"] = rng.integers(0, tenants, size=count)
            if first == 0:
                # Every tenant appears at least once, so the fanout is exactly ``tenants``.
                block["tenant"][:tenants] = np.arange(tenants)
            block["key"] = rng.integers(0, 2**32, size=count, dtype=np.uint32)
            block["value"] = rng.integers(0, MAX_VALUE, size=count)
            block.tofile(fh)


@app.input_features
def features(path: Path) -> dict[str, float]:
    """Only the record count: the tenant count (the real fanout driver) is hidden on purpose."""
    _, records = read_header(single_app_input(Path(path), "skewed"))
    return {"records": float(records)}


# --------------------------------------------------------------------------- stages
@app.stage()
def partition(ctx: sonic.Context) -> None:
    """Write one file per tenant present in the data, appending block by block."""
    source = single_input(ctx)
    for records in iter_records(source):
        order = np.argsort(records["tenant"], kind="stable")
        grouped = records[order]
        tenants, starts = np.unique(grouped["tenant"], return_index=True)
        ends = np.append(starts[1:], grouped.size)
        for tenant, start, end in zip(tenants.tolist(), starts.tolist(), ends.tolist()):
            with ctx.output(tenant_name(int(tenant))).open("ab") as out:
                grouped[start:end].tofile(out)


@app.stage(after="partition", pattern="scatter")
def sort_keys(ctx: sonic.Context) -> None:
    """Sort one tenant's records by key."""
    match = _TENANT_RE.match(ctx.key or "")
    if match is None:
        raise ValueError(f"sort_keys got scatter key {ctx.key!r}; expected a tenant name like tenant-00003")
    parts = [np.fromfile(p, dtype=RECORD_DTYPE) for p in ctx.inputs]
    records = np.concatenate(parts) if parts else np.empty(0, dtype=RECORD_DTYPE)
    records[np.argsort(records["key"], kind="stable")].tofile(ctx.output(f"sorted-{match.group(1)}"))


@app.stage(after="sort_keys", pattern="one-to-one")
def tally(ctx: sonic.Context) -> None:
    """Tally one tenant's key-sorted records."""
    source = single_input(ctx)
    match = _SORTED_RE.match(source.name)
    if match is None:
        raise ValueError(f"tally got input {source.name!r}; expected a name like sorted-00003")
    records = np.fromfile(source, dtype=RECORD_DTYPE)
    if (records["key"][1:] < records["key"][:-1]).any():
        raise ValueError(f"{source.name} is not sorted by key")
    result = Tally()
    result.add(records)
    if set(result.by_tenant) != {int(match.group(1))}:
        raise ValueError(f"{source.name} holds records of tenants {sorted(result.by_tenant)}")
    ctx.output(f"tally-{match.group(1)}").write_text(json.dumps(result.as_json(), sort_keys=True))


@app.stage(after="tally", pattern="gather")
def combine(ctx: sonic.Context) -> None:
    """Join the per-tenant tallies into ``tallies.json``."""
    merged: dict[str, dict[str, int]] = {}
    for path in ctx.inputs:
        merged.update(json.loads(path.read_text()))
    doc = {"app": "skewed", "tenants": len(merged), "tallies": dict(sorted(merged.items(), key=lambda kv: int(kv[0])))}
    ctx.output(RESULT_NAME).write_text(json.dumps(doc, sort_keys=True))


# --------------------------------------------------------------------------- validator
def expected_tallies(input_path: Path) -> dict[str, dict[str, int]]:
    """Ground truth: every tenant's tally computed straight from the input."""
    result = Tally()
    for records in iter_records(single_app_input(Path(input_path), "skewed")):
        result.add(records)
    return result.as_json()


@app.validate_output
def validate(input_path: Path, outputs: list[Path]) -> sonic.Validation:
    """``tallies.json`` holds exactly the tenants of the input with their recomputed tallies."""
    if len(outputs) != 1 or Path(outputs[0]).name != RESULT_NAME:
        return sonic.Validation(False, f"expected exactly one {RESULT_NAME} output, got {len(outputs)} files")
    try:
        got = json.loads(Path(outputs[0]).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return sonic.Validation(False, f"cannot read {RESULT_NAME}: {exc}")
    try:
        want = expected_tallies(Path(input_path))
    except ValueError as exc:
        return sonic.Validation(False, f"cannot read the input: {exc}")
    tallies = got.get("tallies") if isinstance(got, dict) else None
    if not isinstance(tallies, dict):
        return sonic.Validation(False, f"{RESULT_NAME} lacks a 'tallies' object")
    if set(tallies) != set(want):
        return sonic.Validation(False, f"{RESULT_NAME} has {len(tallies)} tenants, the input has {len(want)}")
    wrong = [t for t in want if tallies[t] != want[t]]
    if wrong or got.get("tenants") != len(want):
        return sonic.Validation(False, f"tallies differ from the input for tenants {wrong[:5]} (of {len(want)})")
    return sonic.Validation(True, f"{len(want)} tenants, every tally matches the input")
