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
