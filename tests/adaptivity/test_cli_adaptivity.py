"""The adaptivity loop through the CLI on a real loopback cluster: profile, plan, run with
mid-job re-planning, the oracle from the CLI, learning that can be turned off, plain errors
for an app with no profile, and a wrong input that never reaches the models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
APP = "examples.skewed:app"


def sonic(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "sonic.cli", *args], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"sonic {' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("adaptivity")
    env = {**os.environ, "SONIC_HOME": str(root / "store"), "SONIC_CLUSTER": str(root / "cluster.yaml"),
           "TMP_ROOT": str(root)}
    sonic(env, "cluster", "up", "--local", "2")
    try:
        sonic(env, "profile", APP, "--sizes", "500KB,1MB,2MB,4MB", "--runs", "2")
        for seed, name in ((777, "skewed.in"), (3, "normal.in")):
            sonic(env, "workloads", "gen", APP, "--size", "4MB", "--seed", str(seed), "-o", str(root / name))
        yield env
    finally:
        sonic(env, "cluster", "down", check=False)


def parts(env: dict[str, str], app: str = "skewed") -> int:
    return len(list((Path(env["SONIC_HOME"]) / "profiles" / app).glob("part-*.parquet")))


def test_a_mispredicted_fanout_is_replanned_mid_job(env: dict[str, str]) -> None:
    proc = sonic(env, "run", APP, "--input", f"{env['TMP_ROOT']}/skewed.in", "--json")
    report = json.loads(proc.stdout)
    assert report["output_ok"]
    first = report["replans"][0]
    assert first["after_stage"] == "partition"
    assert first["deviations"]["sort_keys.instances"] == {"predicted": 8.0, "observed": 32.0}
    assert "partition->sort_keys" in first["methods"]
    assert "re-planned after stage partition" in proc.stderr
    assert report["learning"]["recorded"] and proc.stderr.count("models: ") == 1


def test_no_replan_turns_it_off(env: dict[str, str]) -> None:
    proc = sonic(env, "run", APP, "--input", f"{env['TMP_ROOT']}/skewed.in", "--json", "--no-replan", "--no-learn")
    assert "replans" not in json.loads(proc.stdout)
    assert "is not calibrated" in proc.stderr  # the sonic plan of a run says so too


def test_oracle_from_the_cli_probes_once_then_plans_from_the_measurement(env: dict[str, str]) -> None:
    data = Path(env["TMP_ROOT"]) / "oracle.in"
    data.write_bytes((Path(env["TMP_ROOT"]) / "normal.in").read_bytes())
    first = sonic(env, "run", APP, "--input", str(data), "--strategy", "oracle", "--json")
    assert "probing it once" in first.stderr and json.loads(first.stdout)["output_ok"]
    second = sonic(env, "run", APP, "--input", str(data), "--strategy", "oracle", "--json")
    assert "probing" not in second.stderr
    doc = json.loads(second.stdout)
    assert doc["output_ok"] and doc["strategy"] == "oracle"


def test_no_learn_leaves_the_profile_alone(env: dict[str, str]) -> None:
    before = parts(env)
    proc = sonic(env, "run", APP, "--input", f"{env['TMP_ROOT']}/normal.in", "--no-learn", "--json")
    assert json.loads(proc.stdout)["learning"]["reason"] == "--no-learn"
    assert parts(env) == before


def test_plan_of_an_app_never_profiled_says_so(env: dict[str, str]) -> None:
    proc = sonic(env, "plan", "examples.topk:app", "--input-size", "4MB", check=False)
    assert proc.returncode == 2
    assert "has no profile or models" in proc.stderr and "sonic profile topk" in proc.stderr
    assert "internal error" not in proc.stderr


def test_plan_with_input_size_names_untrusted_reasons_or_plans(env: dict[str, str]) -> None:
    proc = sonic(env, "plan", APP, "--input-size", "4MB", "--json")
    plan = json.loads(proc.stdout)
    assert plan["input_bytes"] == 4_000_000
    for note in plan.get("notes", []):
        assert "too few profiling samples" not in note


def test_a_text_file_given_as_video_changes_no_model(env: dict[str, str]) -> None:
    text = Path(env["TMP_ROOT"]) / "notes.txt"
    text.write_text("hello world\n" * 30_000)
    proc = sonic(env, "run", "video", "--input", str(text), check=False)
    assert proc.returncode == 2, proc.stderr
    assert "is not a video file" in proc.stderr and "internal error" not in proc.stderr
    assert parts(env, "video") == 0


def test_planning_on_an_uncalibrated_cluster_says_so(env: dict[str, str], tmp_path: Path) -> None:
    proc = sonic(env, "plan", APP, "--input-size", "4MB")
    assert "warning: cluster" in proc.stdout and "is not calibrated" in proc.stdout  # with the plan, as its notes
    assert "sonic cluster calibrate --cluster" in proc.stdout
    # A cluster file whose calibration was measured plans without the warning.
    doc = yaml.safe_load(Path(env["SONIC_CLUSTER"]).read_text())
    doc.setdefault("calibration", {})["measured"] = True
    calibrated = tmp_path / "calibrated.yaml"
    calibrated.write_text(yaml.safe_dump(doc))
    proc = sonic({**env, "SONIC_CLUSTER": str(calibrated)}, "plan", APP, "--input-size", "4MB")
    assert "not calibrated" not in proc.stdout
