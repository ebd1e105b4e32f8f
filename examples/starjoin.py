"""Star join: two source stages, a broadcast join, an aggregation shuffle and a gather.

Shape (two sources; ``join`` mixes a scatter and a broadcast in-edge)::

    load_facts (1) --scatter-----> join (P) --scatter--> aggregate (P) --gather--> report (1)
    load_dims  (1) --broadcast--/

Input: one binary file (``generate_input``): a 16-byte header (``b"SJN1"``, ``uint32`` number of
dimension rows D, ``uint64`` number of fact rows F), then D dimension rows
(:data:`DIM_DTYPE`: ``dim_id``, ``category``, ``weight``) and F fact rows (:data:`FACT_DTYPE`:
``dim_id``, ``amount``). D is fixed (:data:`NUM_DIMS`); F grows with the size.

Both source stages read the application input (every source stage receives it, see
``sonic.routing.route_instances``):

* ``load_facts`` cuts the fact rows into P = ceil(fact bytes / :data:`PART_BYTES`) partitions
  ``facts-0000-of-0004`` ...; P grows with the input (the total travels in the name because
  a join instance sees only its partition).
* ``load_dims`` writes the dimension table ``dims`` (D x 12 bytes, constant).
* ``join`` (one instance per fact partition, each receiving all of ``dims``) looks every fact's
  dimension up (an unknown ``dim_id`` is an error) and writes the joined rows
  (:data:`JOINED_DTYPE`: ``category``, ``value = amount * weight``) partitioned by
  ``category % P`` into ``group-0000`` ... ``group-{P-1}`` (always all P files).
* ``aggregate`` (one instance per group name, receiving that group's file from every join
  instance: a shuffle like sort's map -> reduce) sums count and value per category into
  ``agg-XXXX`` (JSON).
* ``report`` gathers them into ``report.json``: per category (as a string key) ``count`` and
  ``value``, plus the totals.

The validator recomputes the join and the per-category sums from the input with numpy and
compares them with ``report.json`` exactly (integer arithmetic, no rounding).

Why this shape: the category count is fixed (:data:`NUM_CATEGORIES`), so the aggregation's
*total* output is constant (one small record per category) while its fanout P grows with the
input: the per-instance output of ``aggregate`` shrinks as 1/P. Predicting the bytes reaching
``report`` as (per-instance output) x (fanout), each extrapolated separately from small
profiled sizes, is wrong for this app; routing the producers' *total* output is right.
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

app = sonic.App("starjoin")
APP = app

MAGIC = b"SJN1"
HEADER_BYTES = 16
DIM_DTYPE = np.dtype([("dim_id", "<u4"), ("category", "<u4"), ("weight", "<u4")])
FACT_DTYPE = np.dtype([("dim_id", "<u4"), ("amount", "<u4")])
JOINED_DTYPE = np.dtype([("category", "<u4"), ("value", "<u8")])
#: Rows of the dimension table (fixed: the broadcast side stays small).
NUM_DIMS = 4096
#: Distinct categories of the dimension table.
NUM_CATEGORIES = 512
#: Target bytes of fact rows per ``join`` instance (a multiple of FACT_DTYPE.itemsize).
PART_BYTES = 1_000_000
#: Fact rows generated / validated per block.
BLOCK_ROWS = 1 << 17
MAX_AMOUNT = 1000
MAX_WEIGHT = 100
REPORT_NAME = "report.json"
_PART_RE = re.compile(r"^facts-(\d{4,})-of-(\d{4,})$")
_GROUP_RE = re.compile(r"^group-(\d{4,})$")

assert PART_BYTES % FACT_DTYPE.itemsize == 0


# --------------------------------------------------------------------------- input format
def read_header(path: Path) -> tuple[int, int]:
    """``(dimension rows, fact rows)`` of an input, after checking magic and length."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(HEADER_BYTES)
    if len(head) < HEADER_BYTES or head[:4] != MAGIC:
        raise ValueError(
            f"{path.name} is not a starjoin input (no {MAGIC!r} header); "
            "generate one with `sonic workloads gen examples.starjoin:app`"
        )
    n_dims = int(np.frombuffer(head, dtype="<u4", count=1, offset=4)[0])
    n_facts = int(np.frombuffer(head, dtype="<u8", count=1, offset=8)[0])
    expected = HEADER_BYTES + n_dims * DIM_DTYPE.itemsize + n_facts * FACT_DTYPE.itemsize
    if size != expected:
        raise ValueError(f"{path.name}: header says {n_dims} dims and {n_facts} facts ({expected} bytes), file has {size}")
    return n_dims, n_facts


def read_dims(path: Path) -> np.ndarray:
    n_dims, _ = read_header(path)
    return np.fromfile(path, dtype=DIM_DTYPE, count=n_dims, offset=HEADER_BYTES)


def _facts_offset(n_dims: int) -> int:
    return HEADER_BYTES + n_dims * DIM_DTYPE.itemsize


def iter_facts(path: Path, block_rows: int = BLOCK_ROWS) -> Iterator[np.ndarray]:
    """Fact rows of an input in blocks (bounded memory)."""
    n_dims, n_facts = read_header(path)
    offset = _facts_offset(n_dims)
    for first in range(0, n_facts, block_rows):
        count = min(block_rows, n_facts - first)
        yield np.fromfile(path, dtype=FACT_DTYPE, count=count, offset=offset + first * FACT_DTYPE.itemsize)


def num_partitions(n_facts: int) -> int:
    """Fanout of ``join`` for an input of ``n_facts`` fact rows."""
    return max(1, math.ceil(n_facts * FACT_DTYPE.itemsize / PART_BYTES))


def join_rows(facts: np.ndarray, dims: np.ndarray) -> np.ndarray:
    """Inner join of fact rows with the dimension table; every fact must find its dimension."""
    order = np.argsort(dims["dim_id"], kind="stable")
    ids = dims["dim_id"][order]
    if ids.size == 0:
        if facts.size:
            raise ValueError(f"{facts.size} fact rows but the dimension table is empty")
        return np.empty(0, dtype=JOINED_DTYPE)
    pos = np.minimum(np.searchsorted(ids, facts["dim_id"]), ids.size - 1)
    unknown = ids[pos] != facts["dim_id"]
    if unknown.any():
        first = int(facts["dim_id"][unknown][0])
        raise ValueError(f"{int(unknown.sum())} fact rows reference unknown dimension ids (first: {first})")
    matched = dims[order][pos]
    joined = np.empty(facts.size, dtype=JOINED_DTYPE)
    joined["category"] = matched["category"]
    joined["value"] = facts["amount"].astype(np.uint64) * matched["weight"].astype(np.uint64)
    return joined


def aggregate_rows(joined: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per category (0 .. NUM_CATEGORIES-1): row count and sum of values (int64)."""
    counts = np.bincount(joined["category"], minlength=NUM_CATEGORIES).astype(np.int64)
    # Integer sums: bincount's float weights would round very large sums.
    values = np.zeros(NUM_CATEGORIES, dtype=np.int64)
    np.add.at(values, joined["category"].astype(np.intp), joined["value"].astype(np.int64))
    return counts, values


def report_of(counts: np.ndarray, values: np.ndarray) -> dict[str, object]:
    return {
        "app": "starjoin",
        "categories": {str(c): {"count": int(counts[c]), "value": int(values[c])}
                       for c in range(NUM_CATEGORIES) if counts[c]},
        "total_count": int(counts.sum()),
        "total_value": int(values.sum()),
    }


# --------------------------------------------------------------------------- generator
@app.generate_input
def generate(path: Path, size_bytes: int, seed: int) -> None:
    """Write a header, NUM_DIMS dimension rows and as many fact rows as fit in ``size_bytes``."""
    rng = np.random.default_rng(seed)
    dims = np.empty(NUM_DIMS, dtype=DIM_DTYPE)
    # Sparse, shuffled ids: the join must really look them up.
    dims["dim_id"] = rng.choice(2**31, size=NUM_DIMS, replace=False)
    dims["category"] = rng.integers(0, NUM_CATEGORIES, size=NUM_DIMS)
    dims["weight"] = rng.integers(1, MAX_WEIGHT + 1, size=NUM_DIMS)
    n_facts = max(1, (size_bytes - _facts_offset(NUM_DIMS)) // FACT_DTYPE.itemsize)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        fh.write(MAGIC + np.array([NUM_DIMS], "<u4").tobytes() + np.array([n_facts], "<u8").tobytes())
        dims.tofile(fh)
        for first in range(0, n_facts, BLOCK_ROWS):
            count = min(BLOCK_ROWS, n_facts - first)
            facts = np.empty(count, dtype=FACT_DTYPE)
            facts["dim_id"] = dims["dim_id"][rng.integers(0, NUM_DIMS, size=count)]
            facts["amount"] = rng.integers(1, MAX_AMOUNT + 1, size=count)
            facts.tofile(fh)


@app.input_features
def features(path: Path) -> dict[str, float]:
    n_dims, n_facts = read_header(single_app_input(Path(path), "starjoin"))
    return {"facts": float(n_facts), "dims": float(n_dims), "partitions": float(num_partitions(n_facts))}


# --------------------------------------------------------------------------- stages
@app.stage()
def load_facts(ctx: sonic.Context) -> None:
    """Cut the fact rows into ``num_partitions`` files of PART_BYTES."""
    source = single_input(ctx)
    n_dims, n_facts = read_header(source)
    rows_per_part = PART_BYTES // FACT_DTYPE.itemsize
    with source.open("rb") as fh:
        fh.seek(_facts_offset(n_dims))
        parts = num_partitions(n_facts)
        for part in range(parts):
            count = min(rows_per_part, n_facts - part * rows_per_part)
            ctx.output(f"facts-{part:04d}-of-{parts:04d}").write_bytes(fh.read(count * FACT_DTYPE.itemsize))


@app.stage()
def load_dims(ctx: sonic.Context) -> None:
    """Write the dimension table."""
    read_dims(single_input(ctx)).tofile(ctx.output("dims"))


@app.stage(after={"load_facts": "scatter", "load_dims": "broadcast"})
def join(ctx: sonic.Context) -> None:
    """Join one fact partition with the dimension table; shuffle the rows into P group files."""
    match = _PART_RE.match(ctx.key or "")
    if match is None:
        raise ValueError(f"join got scatter key {ctx.key!r}; expected a partition name like facts-0003-of-0004")
    groups = int(match.group(2))
    (facts_path,) = ctx.inputs_from("load_facts")
    (dims_path,) = ctx.inputs_from("load_dims")
    facts = np.fromfile(facts_path, dtype=FACT_DTYPE)
    dims = np.fromfile(dims_path, dtype=DIM_DTYPE)
    joined = join_rows(facts, dims)
    group = joined["category"] % groups
    order = np.argsort(group, kind="stable")
    bounds = np.searchsorted(group[order], np.arange(groups + 1))
    grouped = joined[order]
    for g in range(groups):
        # Empty groups are written too, so the aggregate fanout is always P.
        grouped[bounds[g]:bounds[g + 1]].tofile(ctx.output(f"group-{g:04d}"))


@app.stage(after="join", pattern="scatter")
def aggregate(ctx: sonic.Context) -> None:
    """Sum count and value per category of one group (its file from every join instance)."""
    match = _GROUP_RE.match(ctx.key or "")
    if match is None:
        raise ValueError(f"aggregate got scatter key {ctx.key!r}; expected a group name like group-0003")
    parts = [np.fromfile(p, dtype=JOINED_DTYPE) for p in ctx.inputs]
    joined = np.concatenate(parts) if parts else np.empty(0, dtype=JOINED_DTYPE)
    counts, values = aggregate_rows(joined)
    doc = {str(c): [int(counts[c]), int(values[c])] for c in range(NUM_CATEGORIES) if counts[c]}
    ctx.output(f"agg-{match.group(1)}").write_text(json.dumps(doc, sort_keys=True))


@app.stage(after="aggregate", pattern="gather")
def report(ctx: sonic.Context) -> None:
    """Combine the per-group sums into ``report.json``."""
    counts = np.zeros(NUM_CATEGORIES, dtype=np.int64)
    values = np.zeros(NUM_CATEGORIES, dtype=np.int64)
    for path in ctx.inputs:
        for category, (count, value) in json.loads(path.read_text()).items():
            counts[int(category)] += count
            values[int(category)] += value
    ctx.output(REPORT_NAME).write_text(json.dumps(report_of(counts, values), sort_keys=True))


# --------------------------------------------------------------------------- validator
def expected_report(input_path: Path) -> dict[str, object]:
    """Ground truth: the join and aggregation done in one pass over the input."""
    path = single_app_input(Path(input_path), "starjoin")
    dims = read_dims(path)
    counts = np.zeros(NUM_CATEGORIES, dtype=np.int64)
    values = np.zeros(NUM_CATEGORIES, dtype=np.int64)
    for facts in iter_facts(path):
        c, v = aggregate_rows(join_rows(facts, dims))
        counts += c
        values += v
    return report_of(counts, values)


@app.validate_output
def validate(input_path: Path, outputs: list[Path]) -> sonic.Validation:
    """``report.json`` equals the per-category sums recomputed from the input."""
    if len(outputs) != 1 or Path(outputs[0]).name != REPORT_NAME:
        return sonic.Validation(False, f"expected exactly one {REPORT_NAME} output, got {len(outputs)} files")
    try:
        got = json.loads(Path(outputs[0]).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return sonic.Validation(False, f"cannot read {REPORT_NAME}: {exc}")
    try:
        want = expected_report(Path(input_path))
    except ValueError as exc:
        return sonic.Validation(False, f"input cannot be joined: {exc}")
    if not isinstance(got, dict):
        return sonic.Validation(False, f"{REPORT_NAME} is not a JSON object")
    for key in ("total_count", "total_value", "categories"):
        if got.get(key) != want[key]:
            return sonic.Validation(False, f"{REPORT_NAME}: {key} is {str(got.get(key))[:60]}, expected {str(want[key])[:60]}")
    return sonic.Validation(
        True, f"{want['total_count']} facts joined over {len(want['categories'])} categories; sums match the input")  # type: ignore[arg-type]
