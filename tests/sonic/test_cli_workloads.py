"""End to end through the CLI on the built-in workloads: ``workloads gen`` then ``run --local-reference``.

A workload whose module does not exist yet is skipped.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from sonic.sizes import parse_size


def gen_and_run(sonic_cli, tmp_path: Path, app: str, size: str) -> tuple[Path, dict]:
    path = tmp_path / f"{app}.in"
    proc = sonic_cli("workloads", "gen", app, "--size", size, "-o", path, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert path.is_file() and path.stat().st_size > 0
    proc = sonic_cli("run", app, "--input", path, "--local-reference", "--json", cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["app"] == app and report["strategy"] == "reference"
    assert report["output_ok"] is True, report["output_detail"]
    assert report["input_bytes"] == path.stat().st_size
    for stage in report["stages"]:
        assert stage["instances"] >= 1, stage
        assert stage["peak_memory_mb"] > 0, stage
        assert stage["seconds"] >= 0
    for edge in report["edges"]:
        assert {"src", "dst", "method", "bytes", "seconds"} <= set(edge)
        assert edge["bytes"] > 0, edge
    return path, report


def test_sort(sonic_cli, tmp_path):
    sort = pytest.importorskip("workloads.sort")
    path, report = gen_and_run(sonic_cli, tmp_path, "sort", "8MB")
    assert path.stat().st_size == parse_size("8MB")
    assert [s["name"] for s in report["stages"]] == sort.APP.topological_order()
    fanout = math.ceil(path.stat().st_size / sort.CHUNK_BYTES)
    assert {s["name"]: s["instances"] for s in report["stages"]} == {"split": 1, "map": fanout, "reduce": fanout}
    # every record crosses both edges once
    assert {(e["src"], e["dst"]): e["bytes"] for e in report["edges"]} == {
        ("split", "map"): path.stat().st_size, ("map", "reduce"): path.stat().st_size,
    }


def test_video(sonic_cli, tmp_path):
    video = pytest.importorskip("workloads.video")
    _, report = gen_and_run(sonic_cli, tmp_path, "video", "1MB")
    assert [s["name"] for s in report["stages"]] == video.APP.topological_order()


def test_lightgbm(sonic_cli, tmp_path):
    lgbm = pytest.importorskip("workloads.lightgbm")
    _, report = gen_and_run(sonic_cli, tmp_path, "lightgbm", "1MB")
    assert [s["name"] for s in report["stages"]] == lgbm.APP.topological_order()
    assert max(s["instances"] for s in report["stages"]) >= 2  # k models trained in parallel
