"""Sort with elastic map/reduce counts: validated at every count through the reference
executor, profiled with varied counts, and `sonic plan sort --input-size 1GB` showing the
counts chosen and the predicted latency at the others."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from profiler.store import ProfileStore
from profiler.sweep import profile_app, profile_counts, run_reference
from sonic.app import load_app
from sonic.reference import ReferenceExecutor
from workloads.sort import APP, RECORD_BYTES, chunk_bounds, gen

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("counts", [{}, {"map": 1, "reduce": 1}, {"map": 3, "reduce": 5}, {"map": 7},
                                    {"reduce": 2}, {"map": 9, "reduce": 9}])
def test_sort_validates_at_every_count(tmp_path: Path, counts: dict[str, int]) -> None:
    data = tmp_path / "in"
    gen(data, 5_000_000, 11)
    executor = ReferenceExecutor(APP, partitions=counts)
    try:
        result = executor.run(data)
    finally:
        executor.cleanup()
    assert result.output_ok, result.output_detail
    got = {s.name: s.instances for s in result.stages}
    default = 2  # ceil(5 MB / 4 MB)
    maps = counts.get("map", default)
    assert got == {"split": 1, "map": maps, "reduce": counts.get("reduce", maps)}


def test_more_chunks_than_records_gives_empty_chunks(tmp_path: Path) -> None:
    data = tmp_path / "in"
    gen(data, 3 * RECORD_BYTES, 1)
    executor = ReferenceExecutor(APP, partitions={"map": 5, "reduce": 2})
    try:
        result = executor.run(data)
    finally:
        executor.cleanup()
    assert result.output_ok, result.output_detail
    assert chunk_bounds(3 * RECORD_BYTES, 5) == [0, 0, 100, 100, 200, 300]


def test_chunks_are_balanced_whole_records() -> None:
    bounds = chunk_bounds(1_000_000 * RECORD_BYTES, 7)
    sizes = [b - a for a, b in zip(bounds, bounds[1:])]
    assert bounds[-1] == 1_000_000 * RECORD_BYTES and all(s % RECORD_BYTES == 0 for s in sizes)
    assert max(sizes) - min(sizes) <= RECORD_BYTES


def test_profiling_varies_the_elastic_counts() -> None:
    assert [profile_counts(APP, r) for r in range(5)] == [
        {"map": 1, "reduce": 1}, {"map": 4, "reduce": 4}, {"map": 16, "reduce": 16}, {"map": 64, "reduce": 64},
        {"map": 1, "reduce": 1}]


@pytest.fixture(scope="module")
def sort_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small profile of sort (3 sizes x 3 runs at 1, 2 and 4 instances) with fitted models."""
    from models.app_model import AppModel

    root = tmp_path_factory.mktemp("sort-store")
    store = ProfileStore(root)
    app = load_app("sort")
    profile_app(app, [400_000, 800_000, 1_600_000], 3, store=store, executor_factory=run_reference,
                elastic_counts=(1, 2, 4))
    AppModel(app.name).fit(store.load(app.name)).save(root)
    return root


def test_profile_sees_bytes_per_instance_vary(sort_store: Path) -> None:
    rows = ProfileStore(sort_store).load("sort")
    maps = rows[rows["stage"] == "map"]
    # Same input size, different counts: several instance sizes per input size.
    assert maps.groupby("app_input_bytes")["instances"].nunique().min() >= 3


def _plan(root: Path, size: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sonic.cli", "plan", "sort", "--input-size", size,
                           "--root", str(root), *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_sonic_plan_1gb_shows_the_chosen_counts(sort_store: Path) -> None:
    shown = _plan(sort_store, "1GB")
    assert shown.returncode == 0, shown.stderr
    assert "elastic stage  chosen  range" in shown.stdout
    doc = json.loads(_plan(sort_store, "1GB", "--json").stdout)
    for stage in ("map", "reduce"):
        choice = doc["stages"][stage]["parallelism"]
        assert (choice["min"], choice["max"]) == (1, 256)
        assert choice["chosen"] == doc["stages"][stage]["instances"]
        row = next(line for line in shown.stdout.splitlines() if line.startswith(stage + " ") and "1-256" in line)
        assert f"[{choice['chosen']}: " in row


def test_sonic_plan_shows_the_alternatives_it_rejected(sort_store: Path) -> None:
    """Within the profiled bytes per instance (x4), every power of two is a candidate, each
    shown with its predicted latency; none is faster than the choice (objective latency)."""
    doc = json.loads(_plan(sort_store, "4MB", "--json").stdout)
    best = doc["predicted"]["latency_s"]
    for stage in ("map", "reduce"):
        choice = doc["stages"][stage]["parallelism"]
        counts = {a["instances"] for a in choice["alternatives"]} | {choice["chosen"]}
        assert {1, 2, 4, 8, 16} <= counts
        assert all(a["latency_s"] is None or a["latency_s"] >= best - 1e-6 for a in choice["alternatives"])
    shown = _plan(sort_store, "4MB").stdout
    row = next(line for line in shown.splitlines() if line.startswith("map ") and "1-256" in line)
    assert row.count(":") >= 5, row
