"""Smoke test of the adaptivity experiment: a tiny configuration of its quick path (one example
app, one size, two rounds of the four strategies) on a loopback cluster (no root needed), with
learning on; checks the CSV, the summary, both figures and the report section."""

from __future__ import annotations

import csv
import importlib
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def experiments(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.chdir(REPO)  # `examples.topk:app` is found relative to the working directory
    for name in [m for m in sys.modules if m == "experiments" or m.startswith("experiments.")]:
        monkeypatch.delitem(sys.modules, name)
    common = importlib.import_module("experiments.common")
    common.set_output(tmp_path / "out")
    yield importlib.import_module("experiments")
    common.set_output(common.HERE)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_tiny_adaptivity_run(experiments) -> None:  # type: ignore[no-untyped-def]
    from experiments import adaptivity, report
    from experiments.common import MB, OUT

    app = "examples.topk:app"
    adaptivity.run(quick=True, cfg={"mode": "loopback", "sizes": {app: [2 * MB]}, "rounds": 2,
                                    "profile": {app: ("1MB,2MB,4MB", 1)}})
    with open(OUT.results / "adaptivity.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8
    assert all(r["output_ok"] == "True" for r in rows), [r["error"] or r["learning_reason"] for r in rows]
    assert {r["app"] for r in rows} == {"topk"}
    # every strategy once per round, the order rotated between rounds
    for rnd in ("0", "1"):
        assert sorted(r["strategy"] for r in rows if r["round"] == rnd) == sorted(adaptivity.STRATEGIES)
    first = [r["strategy"] for r in rows if r["position"] == "0"]
    assert first[0] != first[1]
    # learning was on: every validated run was recorded into the app's own store
    assert all(r["learning_recorded"] == "True" for r in rows)
    assert (adaptivity.store_root(app) / "profiles").exists() or any(adaptivity.store_root(app).iterdir())
    assert all(float(r["predicted_latency_s"]) > 0 for r in rows)
    (cell,) = adaptivity.summary_rows()
    assert cell["rounds"] == 2 and cell["all_outputs_ok"] is True
    assert cell["worst_sonic_vs_best_fixed"] >= cell["median_sonic_vs_best_fixed"] > 0
    assert 0 <= cell["sonic_median_abs_latency_error"] < 100
    for name in ("adaptivity_ratio.png", "adaptivity_prediction.png"):
        assert (OUT.figures / name).stat().st_size > 1000
    text = report.write().read_text()
    assert "## Adaptivity (issue 10)" in text and "figures/adaptivity_ratio.png" in text
    assert "| topk | 2 | 2 |" in text
