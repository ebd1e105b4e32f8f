"""Fork-join over an event log: one scattered stage feeds two different branches that re-join.

Shape (a diamond: ``parse`` forks into a wide, CPU-heavy branch and a narrow summary branch,
and ``join`` takes both)::

    split (1) --scatter--> parse (N) --one-to-one--> enrich (N) --gather-----> join (1)
                                   \\--gather-----> stats (1)  --broadcast--/

Input: a text log of fixed-width lines (:data:`LINE_BYTES` = 41 bytes each, ``generate_input``)::

    1700000123 u0012345 purchase 200 0001234
    ^ts        ^user    ^kind    ^status ^latency (microseconds)

* ``split`` cuts the log into N = ceil(lines / :data:`CHUNK_LINES`) chunks of ~1 MB at line
  boundaries, ``chunk-0000`` ...; N grows with the input.
* ``parse`` (one instance per chunk) checks every line's format and writes the events as
  binary records (:data:`EVENT_DTYPE`, 16 bytes for 41 bytes of text): ``events``.
* Branch A, ``enrich`` (one-to-one with ``parse``): per event, a region looked up from the user
  and a 16-bit score from an iterated 64-bit mix of (user, ts, kind) (:data:`ENRICH_ROUNDS`
  rounds: a stand-in for CPU-heavy feature extraction such as user-agent parsing). Writes
  ``enriched`` (:data:`ENRICHED_DTYPE`, 16 bytes per event: output about equal to input). The
  heavy branch: most of the app's CPU time, spread over N instances.
* Branch B, ``stats`` (gather of every ``events`` file): per event kind the count and a
  latency histogram (:data:`LAT_BINS` bins of 2**:data:`LAT_SHIFT` us), giving each kind's p99
  latency threshold (the upper edge of the bin holding the 99th percentile). Writes
  ``stats.json`` of a few hundred bytes whatever the input size: a light, one-instance branch
  whose output shrinks to almost nothing.
* ``join`` reads the thresholds (broadcast from ``stats``) and streams every ``enriched`` file
  (gather): an event is *slow* if its latency is at or above its kind's threshold. Writes
  ``regions.csv`` (per region: events, slow, errors, latency sum, score sum; sorted by slow
  desc, then region) and ``report.json`` (totals, thresholds, per kind counts, the
  :data:`TOP_USERS` users with the most slow events).

The validator recomputes everything from the input in two streaming passes (thresholds, then
slow events), independently of the chunking and of the two branches, and compares both outputs
exactly (integer arithmetic only).

Why this shape: ``parse``'s output goes two ways with very different consumers (N parallel
heavy instances one-to-one, and one light instance that needs all of it), and ``join`` waits
for both branches: the critical path runs through the heavier branch, and each of ``parse``'s
out-edges and both of ``join``'s in-edges can be given a different passing method.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

import sonic
from examples._inputs import single_app_input, single_input

app = sonic.App("forkjoin")
APP = app

#: Event kinds (at most 8 characters each; padded with spaces in the log).
KINDS = ("login", "view", "click", "search", "purchase", "upload", "error", "logout")
#: Relative frequency and median latency (us) of each kind in generated inputs.
KIND_WEIGHTS = (0.06, 0.34, 0.24, 0.14, 0.05, 0.04, 0.03, 0.10)
KIND_MEDIAN_US = (9_000, 2_500, 1_500, 12_000, 40_000, 90_000, 500, 3_000)
#: Bytes of one log line: ts(10) ' ' 'u' user(7) ' ' kind(8) ' ' status(3) ' ' latency(7) '\n'.
LINE_BYTES = 41
_TS, _USER, _KIND, _STATUS, _LAT = (0, 10), (12, 19), (20, 28), (29, 32), (33, 40)
_SPACES = (10, 19, 28, 32)
#: Lines per ``split`` chunk (999,990 bytes of text; the last chunk may be short).
CHUNK_LINES = 1_000_000 // LINE_BYTES
#: Users in generated inputs (ids 0 .. NUM_USERS-1; the log format allows up to 10**7 - 1).
NUM_USERS = 50_000
MAX_LATENCY_US = 10**7 - 1
#: Regions a user maps to (the enrich lookup).
NUM_REGIONS = 64
#: Rounds of the 64-bit mix behind each event's score (the cost of ``enrich``).
ENRICH_ROUNDS = 256
#: Latency histogram of ``stats``: bins of 2**LAT_SHIFT us; the last bin takes everything above.
LAT_SHIFT = 10
LAT_BINS = 1024
QUANTILE = 0.99
TOP_USERS = 20
ERROR_STATUS = 500
EVENT_DTYPE = np.dtype([("ts", "<u4"), ("user", "<u4"), ("latency", "<u4"), ("status", "<u2"), ("kind", "<u2")])
ENRICHED_DTYPE = np.dtype([("user", "<u4"), ("latency", "<u4"), ("score", "<u4"),
                           ("status", "<u2"), ("kind", "u1"), ("region", "u1")])
#: Lines generated / validated per block (bounds memory at any input size).
BLOCK_LINES = 1 << 16
REPORT_NAME = "report.json"
TABLE_NAME = "regions.csv"
TABLE_HEADER = ("region", "events", "slow", "errors", "latency_sum", "score_sum")
_CHUNK_RE = re.compile(r"^chunk-(\d{4,})$")

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MASK64 = (1 << 64) - 1

assert EVENT_DTYPE.itemsize == 16 and ENRICHED_DTYPE.itemsize == 16
assert len(KINDS) == len(KIND_WEIGHTS) == len(KIND_MEDIAN_US) and all(len(k) <= 8 for k in KINDS)


# --------------------------------------------------------------------------- log format
def _kind_codes() -> np.ndarray:
    """Each kind's 8 padded bytes as one little-endian uint64 (to look kinds up vectorised)."""
    return np.frombuffer(b"".join(k.ljust(8).encode() for k in KINDS), dtype="<u8").copy()


_KIND_CODES = _kind_codes()
_KIND_ORDER = np.argsort(_KIND_CODES)
_KIND_SORTED = _KIND_CODES[_KIND_ORDER]


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """``(n, width)`` ASCII digits of non-negative integers (zero-padded)."""
    out = np.empty((values.size, width), dtype=np.uint8)
    rest = values.astype(np.uint64)
    for col in range(width - 1, -1, -1):
        out[:, col] = (rest % np.uint64(10)).astype(np.uint8) + ord("0")
        rest //= np.uint64(10)
    return out


def format_lines(events: np.ndarray) -> bytes:
    """The log lines of ``events`` (EVENT_DTYPE)."""
    n = events.size
    text = np.full((n, LINE_BYTES), ord(" "), dtype=np.uint8)
    text[:, _TS[0]:_TS[1]] = _digits(events["ts"], _TS[1] - _TS[0])
    text[:, _USER[0] - 1] = ord("u")
    text[:, _USER[0]:_USER[1]] = _digits(events["user"], _USER[1] - _USER[0])
    text[:, _KIND[0]:_KIND[1]] = _KIND_CODES[events["kind"]].view(np.uint8).reshape(n, 8)
    text[:, _STATUS[0]:_STATUS[1]] = _digits(events["status"], _STATUS[1] - _STATUS[0])
    text[:, _LAT[0]:_LAT[1]] = _digits(events["latency"], _LAT[1] - _LAT[0])
    text[:, -1] = ord("\n")
    return text.tobytes()


def _number(cols: np.ndarray) -> np.ndarray:
    weights = 10 ** np.arange(cols.shape[1] - 1, -1, -1, dtype=np.int64)
    return (cols.astype(np.int64) - ord("0")) @ weights


def parse_lines(data: bytes, where: str = "log") -> np.ndarray:
    """Events (EVENT_DTYPE) of whole log lines; ``ValueError`` naming the first bad line."""
    if len(data) % LINE_BYTES:
        raise ValueError(f"{where}: {len(data)} bytes is not a whole number of {LINE_BYTES}-byte lines; "
                         "not a forkjoin input? Generate one with `sonic workloads gen examples.forkjoin:app`")
    text = np.frombuffer(data, dtype=np.uint8).reshape(-1, LINE_BYTES)
    digits = np.r_[_TS[0]:_TS[1], _USER[0]:_USER[1], _STATUS[0]:_STATUS[1], _LAT[0]:_LAT[1]]
    bad = ((text[:, digits] < ord("0")) | (text[:, digits] > ord("9"))).any(axis=1)
    bad |= (text[:, list(_SPACES)] != ord(" ")).any(axis=1)
    bad |= (text[:, _USER[0] - 1] != ord("u")) | (text[:, -1] != ord("\n"))
    codes = np.ascontiguousarray(text[:, _KIND[0]:_KIND[1]]).view("<u8").ravel()
    pos = np.minimum(np.searchsorted(_KIND_SORTED, codes), len(KINDS) - 1)
    bad |= _KIND_SORTED[pos] != codes
    ts = _number(text[:, _TS[0]:_TS[1]])
    bad |= ts >= 2**32
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        line = bytes(text[first]).decode("ascii", "replace").rstrip("\n")
        raise ValueError(f"{where}: line {first + 1} is not a forkjoin log line: {line[:60]!r} "
                         f"(not a forkjoin input? generate one with `sonic workloads gen examples.forkjoin:app`)")
    events = np.empty(text.shape[0], dtype=EVENT_DTYPE)
    events["ts"] = ts
    events["user"] = _number(text[:, _USER[0]:_USER[1]])
    events["latency"] = _number(text[:, _LAT[0]:_LAT[1]])
    events["status"] = _number(text[:, _STATUS[0]:_STATUS[1]])
    events["kind"] = _KIND_ORDER[pos]
    return events


def num_lines(path: Path) -> int:
    size = Path(path).stat().st_size
    if size % LINE_BYTES:
        raise ValueError(f"{Path(path).name}: {size} bytes is not a whole number of {LINE_BYTES}-byte lines; "
                         "not a forkjoin input? Generate one with `sonic workloads gen examples.forkjoin:app`")
    return size // LINE_BYTES


def num_chunks(lines: int) -> int:
    """Fanout of ``parse`` (and ``enrich``) for a log of ``lines`` lines."""
    return max(1, math.ceil(lines / CHUNK_LINES))


def iter_events(path: Path, block_lines: int = BLOCK_LINES) -> Iterator[np.ndarray]:
    """Events of a log in blocks (bounded memory)."""
    lines = num_lines(path)
    with Path(path).open("rb") as fh:
        for first in range(0, lines, block_lines):
            count = min(block_lines, lines - first)
            yield parse_lines(fh.read(count * LINE_BYTES), f"{Path(path).name} (from line {first + 1})")


# --------------------------------------------------------------------------- computations
def mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def mix64_int(z: int) -> int:
    """The same on one Python int (for cross-checks)."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def region_of(users: np.ndarray) -> np.ndarray:
    return (mix64(users.astype(np.uint64) + _GOLDEN) % np.uint64(NUM_REGIONS)).astype(np.uint8)


def score_of(events: np.ndarray) -> np.ndarray:
    """16-bit score: ENRICH_ROUNDS rounds of mix64 over (user, ts, kind)."""
    with np.errstate(over="ignore"):
        z = (events["user"].astype(np.uint64) << np.uint64(32)) | events["ts"].astype(np.uint64)
        z ^= events["kind"].astype(np.uint64) * _GOLDEN
        for _ in range(ENRICH_ROUNDS):
            z = mix64(z + _GOLDEN)
    return (z >> np.uint64(48)).astype(np.uint32)


def enrich_events(events: np.ndarray) -> np.ndarray:
    out = np.empty(events.size, dtype=ENRICHED_DTYPE)
    out["user"] = events["user"]
    out["latency"] = events["latency"]
    out["status"] = events["status"]
    out["kind"] = events["kind"]
    out["region"] = region_of(events["user"])
    out["score"] = score_of(events)
    return out


def latency_histogram(events: np.ndarray) -> np.ndarray:
    """``(len(KINDS), LAT_BINS)`` counts; the last bin holds every latency above the others."""
    bins = np.minimum(events["latency"] >> LAT_SHIFT, LAT_BINS - 1).astype(np.int64)
    flat = events["kind"].astype(np.int64) * LAT_BINS + bins
    return np.bincount(flat, minlength=len(KINDS) * LAT_BINS).reshape(len(KINDS), LAT_BINS).astype(np.int64)


def thresholds_of(histogram: np.ndarray) -> dict[str, int]:
    """Per kind seen: the upper edge (us) of the bin holding its QUANTILE latency."""
    out: dict[str, int] = {}
    for k, kind in enumerate(KINDS):
        total = int(histogram[k].sum())
        if total == 0:
            continue
        rank = math.ceil(QUANTILE * total)   # the rank-th smallest latency (1-based)
        b = int(np.searchsorted(np.cumsum(histogram[k]), rank))
        out[kind] = (b + 1) << LAT_SHIFT
    return out


def _threshold_array(thresholds: dict[str, int]) -> np.ndarray:
    # A kind stats never saw cannot occur in the enriched events either; never slow.
    return np.array([thresholds.get(k, 2**40) for k in KINDS], dtype=np.int64)


class Totals:
    """What ``join`` (and the validator) accumulates over enriched events (exact int64 sums)."""

    def __init__(self) -> None:
        self.region = np.zeros((NUM_REGIONS, 5), dtype=np.int64)   # events, slow, errors, latency, score
        self.kind = np.zeros((len(KINDS), 3), dtype=np.int64)      # events, slow, latency
        self.user = np.zeros((0, 3), dtype=np.int64)               # events, slow, score (grows to the largest id)

    def add(self, enriched: np.ndarray, thresholds: np.ndarray) -> None:
        latency = enriched["latency"].astype(np.int64)
        kind = enriched["kind"].astype(np.intp)
        slow = (latency >= thresholds[kind]).astype(np.int64)
        error = (enriched["status"] >= ERROR_STATUS).astype(np.int64)
        score = enriched["score"].astype(np.int64)
        ones = np.ones(enriched.size, dtype=np.int64)
        region = enriched["region"].astype(np.intp)
        user = enriched["user"].astype(np.intp)
        need = int(user.max(initial=-1)) + 1
        if need > self.user.shape[0]:
            grown = np.zeros((need, 3), dtype=np.int64)
            grown[:self.user.shape[0]] = self.user
            self.user = grown
        for col, values in enumerate((ones, slow, error, latency, score)):
            np.add.at(self.region[:, col], region, values)
        for col, values in enumerate((ones, slow, latency)):
            np.add.at(self.kind[:, col], kind, values)
        for col, values in enumerate((ones, slow, score)):
            np.add.at(self.user[:, col], user, values)


def outputs_of(totals: Totals, thresholds: dict[str, int]) -> tuple[str, dict[str, object]]:
    """``(regions.csv text, report.json document)``."""
    rows = [(r, *map(int, totals.region[r])) for r in range(NUM_REGIONS) if totals.region[r, 0]]
    rows.sort(key=lambda row: (-row[2], row[0]))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(TABLE_HEADER)
    writer.writerows(rows)
    slow = totals.user[:, 1]
    candidates = np.flatnonzero(slow)
    order = np.lexsort((candidates, -slow[candidates]))[:TOP_USERS]
    top = [{"user": int(u), "slow": int(slow[u]), "events": int(totals.user[u, 0]),
            "score_sum": int(totals.user[u, 2])} for u in candidates[order]]
    doc = {
        "app": "forkjoin",
        "events": int(totals.kind[:, 0].sum()),
        "slow_events": int(totals.kind[:, 1].sum()),
        "errors": int(totals.region[:, 2].sum()),
        "score_sum": int(totals.region[:, 4].sum()),
        "thresholds_us": dict(thresholds),
        "kinds": {kind: {"events": int(totals.kind[k, 0]), "slow": int(totals.kind[k, 1]),
                         "latency_sum": int(totals.kind[k, 2])}
                  for k, kind in enumerate(KINDS) if totals.kind[k, 0]},
        "top_users": top,
    }
    return buf.getvalue(), doc


# --------------------------------------------------------------------------- generator
@app.generate_input
def generate(path: Path, size_bytes: int, seed: int) -> None:
    """Write ``size_bytes // LINE_BYTES`` log lines (at least one)."""
    rng = np.random.default_rng(seed)
    lines = max(1, int(size_bytes) // LINE_BYTES)
    weights = np.array(KIND_WEIGHTS) / sum(KIND_WEIGHTS)
    medians = np.array(KIND_MEDIAN_US, dtype=float)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ts = 1_700_000_000
    with path.open("wb") as fh:
        for first in range(0, lines, BLOCK_LINES):
            n = min(BLOCK_LINES, lines - first)
            events = np.empty(n, dtype=EVENT_DTYPE)
            steps = rng.integers(0, 3, size=n)
            events["ts"] = ts + np.cumsum(steps)
            ts = int(events["ts"][-1])
            # Skewed users: a few heavy ones, a long tail.
            events["user"] = np.minimum((rng.random(n) ** 3 * NUM_USERS).astype(np.int64), NUM_USERS - 1)
            kind = rng.choice(len(KINDS), size=n, p=weights)
            events["kind"] = kind
            events["status"] = np.where(rng.random(n) < 0.02, 500 + rng.integers(0, 4, size=n),
                                        np.where(rng.random(n) < 0.05, 404, 200))
            latency = medians[kind] * rng.lognormal(0.0, 0.8, size=n)
            events["latency"] = np.clip(latency, 1, MAX_LATENCY_US).astype(np.int64)
            fh.write(format_lines(events))


@app.input_features
def features(path: Path) -> dict[str, float]:
    lines = num_lines(single_app_input(Path(path), "forkjoin"))
    return {"events": float(lines), "chunks": float(num_chunks(lines))}


# --------------------------------------------------------------------------- stages
@app.stage()
def split(ctx: sonic.Context) -> None:
    """Cut the log into chunks of CHUNK_LINES lines."""
    source = single_input(ctx)
    lines = num_lines(source)
    with source.open("rb") as fh:
        head = fh.read(LINE_BYTES)
        parse_lines(head, source.name)   # a wrong input fails here, with one line
        fh.seek(0)
        for chunk in range(num_chunks(lines)):
            count = min(CHUNK_LINES, lines - chunk * CHUNK_LINES)
            ctx.output(f"chunk-{chunk:04d}").write_bytes(fh.read(count * LINE_BYTES))


@app.stage(after="split", pattern="scatter")
def parse(ctx: sonic.Context) -> None:
    """Parse one chunk of log lines into binary events."""
    if _CHUNK_RE.match(ctx.key or "") is None:
        raise ValueError(f"parse got scatter key {ctx.key!r}; expected a chunk name like chunk-0003")
    (chunk,) = ctx.inputs
    parse_lines(chunk.read_bytes(), ctx.key or chunk.name).tofile(ctx.output("events"))


@app.stage(after="parse", pattern="one-to-one")
def enrich(ctx: sonic.Context) -> None:
    """Branch A: region lookup and the CPU-heavy score, one chunk's events at a time."""
    (events_path,) = ctx.inputs
    enrich_events(np.fromfile(events_path, dtype=EVENT_DTYPE)).tofile(ctx.output("enriched"))


@app.stage(after="parse", pattern="gather")
def stats(ctx: sonic.Context) -> None:
    """Branch B: per kind latency histograms over every chunk -> p99 thresholds."""
    histogram = np.zeros((len(KINDS), LAT_BINS), dtype=np.int64)
    for path in ctx.inputs:
        histogram += latency_histogram(np.fromfile(path, dtype=EVENT_DTYPE))
    doc = {"events": int(histogram.sum()), "per_kind": {k: int(histogram[i].sum()) for i, k in enumerate(KINDS)},
           "thresholds_us": thresholds_of(histogram)}
    ctx.output("stats.json").write_text(json.dumps(doc, sort_keys=True))


@app.stage(after={"enrich": "gather", "stats": "broadcast"})
def join(ctx: sonic.Context) -> None:
    """Flag slow events with the thresholds; aggregate per region, kind and user."""
    (stats_path,) = ctx.inputs_from("stats")
    summary = json.loads(stats_path.read_text())
    thresholds = {k: int(v) for k, v in summary["thresholds_us"].items()}
    limits = _threshold_array(thresholds)
    totals = Totals()
    for path in ctx.inputs_from("enrich"):   # one chunk at a time: memory stays bounded
        totals.add(np.fromfile(path, dtype=ENRICHED_DTYPE), limits)
    if int(totals.kind[:, 0].sum()) != int(summary["events"]):
        raise ValueError(f"join saw {int(totals.kind[:, 0].sum())} enriched events, stats counted {summary['events']}")
    table, doc = outputs_of(totals, thresholds)
    ctx.output(TABLE_NAME).write_text(table)
    ctx.output(REPORT_NAME).write_text(json.dumps(doc, sort_keys=True))


# --------------------------------------------------------------------------- validator
def expected_outputs(input_path: Path) -> tuple[str, dict[str, object]]:
    """Ground truth in two passes over the whole input (no chunks, no branches): thresholds,
    then slow events. Shares only the line parser and the per-event enrichment with the
    stages (they define the computation); the sums, the ordering and the formatting are done
    here separately from ``Totals`` / ``outputs_of``."""
    path = single_app_input(Path(input_path), "forkjoin")
    histogram = np.zeros((len(KINDS), LAT_BINS), dtype=np.int64)
    for events in iter_events(path):
        bins = np.minimum(events["latency"] // (1 << LAT_SHIFT), LAT_BINS - 1)
        for k in range(len(KINDS)):
            histogram[k] += np.bincount(bins[events["kind"] == k], minlength=LAT_BINS)
    thresholds: dict[str, int] = {}
    for k, kind in enumerate(KINDS):
        total = int(histogram[k].sum())
        if total:
            cumulative, b = 0, 0
            while cumulative + histogram[k, b] < QUANTILE * total:   # first bin reaching the quantile
                cumulative += int(histogram[k, b])
                b += 1
            thresholds[kind] = (b + 1) * (1 << LAT_SHIFT)
    region = np.zeros((NUM_REGIONS, 5), dtype=np.int64)
    kinds = np.zeros((len(KINDS), 3), dtype=np.int64)
    users: dict[int, list[int]] = {}
    for events in iter_events(path):
        enriched = enrich_events(events)
        limit = np.array([thresholds.get(k, 0) for k in KINDS], dtype=np.int64)[enriched["kind"]]
        slow = enriched["latency"].astype(np.int64) >= limit
        error = enriched["status"] >= ERROR_STATUS
        # Block sums stay far below 2**53, so float bincounts are exact here.
        columns = (np.ones(enriched.size), slow, error, enriched["latency"], enriched["score"])
        for col, values in enumerate(columns):
            region[:, col] += np.rint(np.bincount(enriched["region"], weights=values.astype(float),
                                                  minlength=NUM_REGIONS)).astype(np.int64)
        for col, values in enumerate(columns[:2] + columns[3:4]):
            kinds[:, col] += np.rint(np.bincount(enriched["kind"], weights=values.astype(float),
                                                 minlength=len(KINDS))).astype(np.int64)
        ids, first, counts = np.unique(enriched["user"], return_inverse=True, return_counts=True)
        slow_by = np.bincount(first, weights=slow.astype(float), minlength=ids.size)
        score_by = np.bincount(first, weights=enriched["score"].astype(float), minlength=ids.size)
        for u, n, s, sc in zip(ids.tolist(), counts.tolist(), slow_by.tolist(), score_by.tolist()):
            acc = users.setdefault(u, [0, 0, 0])
            acc[0] += n
            acc[1] += int(s)
            acc[2] += int(sc)
    lines = [",".join(TABLE_HEADER)]
    order = sorted((r for r in range(NUM_REGIONS) if region[r, 0]), key=lambda r: (-int(region[r, 1]), r))
    lines += [",".join(str(v) for v in (r, *(int(x) for x in region[r]))) for r in order]
    ranked = sorted((u for u, acc in users.items() if acc[1]), key=lambda u: (-users[u][1], u))[:TOP_USERS]
    doc = {
        "app": "forkjoin",
        "events": int(kinds[:, 0].sum()),
        "slow_events": int(kinds[:, 1].sum()),
        "errors": int(region[:, 2].sum()),
        "score_sum": int(region[:, 4].sum()),
        "thresholds_us": thresholds,
        "kinds": {kind: {"events": int(kinds[k, 0]), "slow": int(kinds[k, 1]), "latency_sum": int(kinds[k, 2])}
                  for k, kind in enumerate(KINDS) if kinds[k, 0]},
        "top_users": [{"user": u, "slow": users[u][1], "events": users[u][0], "score_sum": users[u][2]} for u in ranked],
    }
    return "\n".join(lines) + "\n", doc


@app.validate_output
def validate(input_path: Path, outputs: list[Path]) -> sonic.Validation:
    """``regions.csv`` and ``report.json`` equal what the input gives, byte for byte / key for key."""
    by_name = {Path(p).name: Path(p) for p in outputs}
    if len(outputs) != 2 or set(by_name) != {REPORT_NAME, TABLE_NAME}:
        names = ", ".join(sorted(by_name)) or "none"
        return sonic.Validation(False, f"expected exactly {TABLE_NAME} and {REPORT_NAME}, got {len(outputs)} files ({names})")
    try:
        got_doc = json.loads(by_name[REPORT_NAME].read_text())
        got_table = by_name[TABLE_NAME].read_text()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return sonic.Validation(False, f"cannot read the outputs: {exc}")
    try:
        want_table, want_doc = expected_outputs(Path(input_path))
    except ValueError as exc:
        return sonic.Validation(False, f"input cannot be parsed: {exc}")
    if not isinstance(got_doc, dict):
        return sonic.Validation(False, f"{REPORT_NAME} is not a JSON object")
    for key, want in want_doc.items():
        if got_doc.get(key) != want:
            return sonic.Validation(False, f"{REPORT_NAME}: {key} is {str(got_doc.get(key))[:60]}, expected {str(want)[:60]}")
    if set(got_doc) != set(want_doc):
        return sonic.Validation(False, f"{REPORT_NAME}: unexpected keys {sorted(set(got_doc) - set(want_doc))}")
    if got_table != want_table:
        got_lines, want_lines = got_table.splitlines(), want_table.splitlines()
        first = next((i for i, (a, b) in enumerate(zip(got_lines, want_lines)) if a != b),
                     min(len(got_lines), len(want_lines)))
        return sonic.Validation(False, f"{TABLE_NAME} differs from line {first + 1} "
                                       f"({len(got_lines)} lines, expected {len(want_lines)})")
    return sonic.Validation(
        True, f"{want_doc['events']} events, {want_doc['slow_events']} slow over {len(want_doc['kinds'])} kinds "  # type: ignore[arg-type]
              f"and {len(want_table.splitlines()) - 1} regions; report and table match the input")
