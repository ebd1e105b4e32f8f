"""`sonic demo`, shrunk: the whole loop (cluster, calibrate, profile, fit, plan, run, teardown)."""

from __future__ import annotations

import os

from sonic.workflows.demo import render_summary, run_demo


def test_demo_runs_the_whole_loop_and_cleans_up() -> None:
    summary = run_demo(progress=False, vms=2, profile_sizes=(4_000_000, 8_000_000, 16_000_000),
                       input_bytes=12_000_000, runs=1)
    assert set(summary["strategies"]) == {"sonic", "remote"}
    for strategy in summary["strategies"].values():
        assert strategy["output_ok"]
        assert strategy["latency_s"] > 0 and strategy["cost_usd"] > 0
        assert [e["src"] for e in strategy["edges"]] == ["split", "extract", "classify"]
    assert all(e["method"] == "remote" for e in summary["strategies"]["remote"]["edges"])
    assert summary["speedup_vs_remote"] > 0
    assert any("Sonic vs all-remote" in line for line in render_summary(summary))
    # Every process the demo started (agents and S3 server carry its work dir) is gone.
    assert not live_processes_mentioning(b"sonic-demo-")


def live_processes_mentioning(marker: bytes) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                state = fh.read().rsplit(b")", 1)[1].split()[0]
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except OSError:
            continue  # exited while we looked
        if state != b"Z" and marker in cmdline:
            found.append(int(pid))
    return found
