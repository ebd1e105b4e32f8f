"""Smoke test of the experiments package: one tiny fanout sweep end to end on a loopback
cluster (no root needed), its CSV, figure and the generated report, in a temp directory."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest


@pytest.mark.timeout(300)
def test_tiny_fanout_sweep_end_to_end(experiments, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from experiments import fanout, report
    from experiments.common import MB, OUT

    fanout.run(quick=True, cfg={"mode": "loopback", "bandwidths": [0.0], "fanouts": [1, 3], "runs": 1,
                                "vms": 2, "cores": 2, "object_bytes": 1 * MB, "compute_s": 0.05})
    with open(OUT.results / "fanout.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["strategy"] for r in rows} == {"vm", "direct", "remote", "sonic"}
    assert {int(r["fanout"]) for r in rows} == {1, 3}
    assert all(r["output_ok"] == "True" for r in rows), [r["output_detail"] for r in rows]
    assert all(float(r["latency_s"]) > 0.05 for r in rows)
    with open(OUT.results / "fanout_planner.csv", newline="") as fh:
        choices = list(csv.DictReader(fh))
    assert {c["planner_choice"] for c in choices} <= {"vm", "direct", "remote"}
    assert (OUT.figures / "fanout_crossover.png").stat().st_size > 1000
    text = report.write().read_text()
    assert "Fanout crossover" in text and "figures/fanout_crossover.png" in text


def test_synthetic_app_validates_on_the_reference_executor(experiments, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from experiments import synthetic
    from sonic.reference import ReferenceExecutor

    app = synthetic.build(3)
    path = synthetic.write_input(tmp_path / "in.json", 200_000, 0.0)
    executor = ReferenceExecutor(app)
    try:
        result = executor.run(path)
    finally:
        executor.cleanup()
    assert result.output_ok, result.output_detail
    assert [s.instances for s in result.stages] == [1, 3]
    assert synthetic.__getattr__("f5").stages["consume"].instances == 5


def test_report_without_results_is_still_written(experiments) -> None:  # type: ignore[no-untyped-def]
    from experiments import report

    text = report.write().read_text()
    assert "Emulated cluster" in text and "(not run)" in text
