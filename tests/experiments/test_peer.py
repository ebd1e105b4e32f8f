"""Quick test of the peer experiment's parts (the whole experiment profiles, calibrates and runs a
cluster: minutes): the numpy floor and one Lithops localhost sort of a tiny input, each in its
subprocess and validated; then the summary, the issue-12 targets and the report section from
rows written as the experiment writes them. Skipped when Lithops is not installed."""

from __future__ import annotations

import importlib
import importlib.util
import math
from pathlib import Path

import pytest


def _tiny_input(path: Path, size: int) -> Path:
    from sonic.app import load_app
    from sonic.inputs import generate_input

    generate_input(load_app("sort"), path, size, seed=7)
    return path


def test_floor_sorts_and_validates(experiments, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from experiments import peer

    result = peer.run_floor(_tiny_input(tmp_path / "in", 2_000_000))
    assert result["output_ok"] is True, result["output_detail"]
    assert result["records"] == 20_000
    assert 0 < result["latency_s"] < 30


@pytest.mark.timeout(120)
@pytest.mark.skipif(importlib.util.find_spec("lithops") is None,
                    reason="Lithops is not installed (pip install -e '.[experiments]')")
def test_one_lithops_sort_validates(experiments, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from experiments import peer

    result = peer.run_lithops(_tiny_input(tmp_path / "in", 2_000_000), tasks=2)
    assert result["output_ok"] is True, result["output_detail"]
    assert (result["mappers"], result["reducers"]) == (2, 2)
    assert result["latency_s"] > 0


def test_sizes_and_rounds_from_the_environment(experiments, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from experiments import peer
    from sonic.errors import UserInputError

    monkeypatch.setenv(peer.SIZES_ENV, "256MB,1GB,2GB")
    monkeypatch.setenv(peer.ROUNDS_ENV, "4")
    cfg = peer.config(quick=False)
    assert cfg["sizes"] == [256_000_000, 1_000_000_000, 2_000_000_000] and cfg["rounds"] == 4
    assert [peer.lithops_tasks(s) for s in cfg["sizes"]] == [8, 16, 23]
    monkeypatch.setenv(peer.ROUNDS_ENV, "zero")
    with pytest.raises(UserInputError, match=peer.ROUNDS_ENV):
        peer.config(quick=False)


def test_summary_targets_and_report(experiments) -> None:  # type: ignore[no-untyped-def]
    from experiments import peer, report
    from experiments.common import OUT, write_csv

    size = 1_000_000_000
    latencies = {"lithops": [12.0, 11.0, 13.0], "sonic": [6.0, 7.0, 5.0], "vm": [6.5, 6.6, 6.7],
                 "direct": [8.0, 8.0, 8.0], "floor": [4.0, 4.5, 5.0]}
    rows = []
    for system, values in latencies.items():
        for round_index, latency in enumerate(values):
            row = {"system": system, "input_bytes": size, "round": round_index, "latency_s": latency,
                   "output_ok": True, "plan": system}
            if system in peer.SONIC_STRATEGIES:
                row.update(counts="split=1 map=16 reduce=16", objects_stored="split>map:16 map>reduce:16",
                           shuffle_objects=16, map_instances=16, s3_put=0, s3_get=0, methods="split>map:vm")
            rows.append(row)
    write_csv(OUT.results / "peer.csv", rows)
    (entry,) = peer.summary()
    assert entry["sonic_median_s"] == 6.0 and entry["sonic_min_s"] == 5.0 and entry["sonic_max_s"] == 7.0
    assert math.isclose(entry["lithops_over_sonic"], 2.0) and math.isclose(entry["sonic_over_floor"], 6.0 / 4.5)
    assert entry["best_fixed"] == "vm" and entry["sonic_shuffle_objects_eq_mappers"] and entry["all_ok"]
    (target,) = peer.targets()
    assert target["vs_lithops_ok"] and target["vs_floor_ok"] and target["objects_ok"]
    text = report.write().read_text()
    assert "| 1000 MB | 12.00 (11.00-13.00) | 6.00 (5.00-7.00) |" in text
    assert "live sonic plan >= 1.5x faster than Lithops" in text


def test_without_lithops_it_says_how_to_install_it(experiments, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from experiments import peer
    from sonic.errors import UserInputError

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "lithops" else real_find_spec(name, *a))
    with pytest.raises(UserInputError, match=r"pip install -e '\.\[experiments\]'"):
        peer.run(quick=True)
