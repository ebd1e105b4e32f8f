"""Smoke test of the adaptivity experiment: a tiny configuration of its quick path (one example
app, one size, two rounds of the four strategies) on a loopback cluster (no root needed), with
learning on; checks the CSV, the summary, both figures and the report section."""

from __future__ import annotations

import csv

import pytest


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


def test_summary_of_a_hand_made_csv(experiments) -> None:  # type: ignore[no-untyped-def]
    """The analysis alone (no cluster): ratios per round against the best fixed strategy of the
    same round, first vs last rounds, latency error per strategy, failed runs excluded."""
    from experiments import adaptivity
    from experiments.common import OUT, write_csv

    latencies = {"sonic": [2.0, 1.1, 1.0, 1.0], "remote": [3.0, 3.0, 3.0, 3.0], "vm": [1.0, 1.0, 2.0, 1.0],
                 "direct": [1.5, 1.5, 1.25, 1.0]}
    rows = []
    for r in range(4):
        for s, lat in latencies.items():
            rows.append({"app": "topk", "input_bytes": 2_000_000, "round": r, "strategy": s, "latency_s": lat[r],
                         "predicted_latency_s": lat[r] * (1.2 if s == "sonic" else 1.0), "output_ok": True,
                         "models_replaced": r == 0, "replans": 1 if (s == "sonic" and r == 3) else 0,
                         "methods": f"a>b:{'remote' if r == 0 else 'vm'}"})
    # a failed run of the best fixed strategy does not count as the round's best
    rows.append({"app": "topk", "input_bytes": 2_000_000, "round": 4, "strategy": "vm", "latency_s": 0.1,
                 "output_ok": False})
    rows.append({"app": "topk", "input_bytes": 2_000_000, "round": 4, "strategy": "sonic", "latency_s": 1.0,
                 "predicted_latency_s": 1.0, "output_ok": True})
    rows.append({"app": "topk", "input_bytes": 2_000_000, "round": 4, "strategy": "remote", "latency_s": 2.0,
                 "output_ok": True})
    path = write_csv(OUT.results / "adaptivity.csv", rows, adaptivity.COLUMNS)
    assert adaptivity.ratios(adaptivity.read_csv(path)) == [(0, 2.0), (1, 1.1), (2, 0.8), (3, 1.0), (4, 0.5)]
    (cell,) = adaptivity.summary_rows(path)
    assert cell["worst_sonic_vs_best_fixed"] == 2.0
    assert cell["median_sonic_vs_best_fixed"] == 1.0
    assert cell["rounds_within_1_10"] == 4
    assert cell["rounds_same_methods_as_best"] == 5  # every strategy of a round ran the same methods
    assert cell["window"] == 2
    assert cell["sonic_first_mean_s"] == (2.0 + 1.1) / 2 and cell["sonic_last_mean_s"] == 1.0
    assert abs(cell["sonic_median_abs_latency_error"] - 0.2) < 1e-9
    assert cell["remote_median_abs_latency_error"] == 0.0
    assert cell["all_outputs_ok"] is False
    assert cell["models_replaced"] == 4 and cell["replans"] == 1 and cell["sonic_plans"] == 2
