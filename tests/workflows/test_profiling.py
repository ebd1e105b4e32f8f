"""run_profile: the function behind `sonic profile`."""

from __future__ import annotations

from pathlib import Path

from sonic.workflows.profiling import run_profile


def test_run_profile_profiles_fits_and_prints(tmp_path: Path) -> None:
    lines: list[str] = []
    summary = run_profile("profiler.synthetic:CHAIN", "64KB,128KB,256KB", 1, tmp_path,
                          echo=lines.append, progress=True, note=lines.append)
    assert summary["runs"] == 3 and summary["app"] == "chain"
    assert (tmp_path / "profiles" / "chain").is_dir()
    assert (tmp_path / "models" / "chain" / "manifest.json").exists()
    assert any(line.startswith("size 128KB run 1/1 ... ") and line.endswith("s") for line in lines)
    assert any("profiled chain: 3 runs" in line for line in lines)
    assert {r["metric"] for r in summary["report"]} == {"memory", "time", "output_bytes", "fanout"}


def test_run_profile_is_quiet_without_progress_and_appends(tmp_path: Path) -> None:
    lines: list[str] = []
    run_profile("profiler.synthetic:CHAIN", [64_000], 1, tmp_path, echo=lines.append, progress=False)
    run_profile("profiler.synthetic:CHAIN", [64_000], 1, tmp_path, echo=lines.append, progress=False)
    assert not any(line.startswith("size ") for line in lines)
    assert len(list((tmp_path / "profiles" / "chain").glob("part-*.parquet"))) == 2


def test_a_plan_without_models_leaves_elastic_counts_to_the_app(tmp_path: Path) -> None:
    """No models: the placeholder predicts one instance per stage, which must not become the
    elastic stages' chosen count (a 2 GB sort once ran as one 6 GB reduce)."""
    from sonic.app import load_app
    from sonic.cluster.spec import Calibration, ClusterSpec, VMSpec
    from sonic.workflows.planning import plan_for

    app = load_app("sort")
    cluster = ClusterSpec([VMSpec(f"vm{i}", f"10.213.0.{10 + i}", 2, 8192, 0.096) for i in range(2)],
                          calibration=Calibration())
    plan, prediction = plan_for(app, 2_000_000_000, cluster, strategy="vm", root=tmp_path / "empty")
    assert prediction.source == "none"
    assert app.elastic_stages() and all(plan.stages[s].parallelism is None for s in app.elastic_stages())
