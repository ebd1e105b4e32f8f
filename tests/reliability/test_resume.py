"""A coordinator killed with SIGKILL mid-sort: `sonic run --resume JOB` finishes the job from
its journal, re-running only instances not journaled as done; without a resume the agents'
leases run out and nothing of the job is left, not on any VM's disk nor in the bucket.
Real `sonic run` processes, real agents, the real S3-compatible server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
from reliability_helpers import kill9, options, wait_until

from sonic.app import load_app
from sonic.cluster.spec import ClusterSpec
from sonic.emulation.local import client_env, local_cluster
from sonic.inputs import generate_input
from sonic.plan import PassingMethod, fixed_plan
from sonic.runtime.remote import RemoteSettings, RemoteStore

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[ClusterSpec, Path]]:
    with local_cluster(3, "loopback", tmp_path / "cluster", options=options()) as spec:
        path = tmp_path / "cluster.yaml"
        spec.save(path)
        yield spec, path


def sonic(argv: list[str], cwd: Path) -> list[str]:
    return [sys.executable, "-m", "sonic.cli", *argv]


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k != "SONIC_DEBUG"}
    out["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT), os.environ.get("PYTHONPATH")]))
    return out


def journal_lines(root: Path) -> tuple[str, list[dict[str, object]]]:
    files = list((root / "jobs").glob("*.jsonl"))
    if len(files) != 1:
        return "", []
    docs = []
    for line in files[0].read_text().splitlines():
        try:
            docs.append(json.loads(line)["doc"])
        except (ValueError, KeyError):
            break
    return files[0].stem, [d for d in docs if d.get("kind") == "done"]


def start_and_kill(spec: ClusterSpec, cluster_file: Path, tmp_path: Path, size: int, *extra: str
                   ) -> tuple[Path, Path, str, list[dict[str, object]]]:
    """Start a REMOTE-plan sort; SIGKILL its `sonic run` once split and a few mappers are journaled."""
    app = load_app("sort")
    data = generate_input(app, tmp_path / "sort.in", size, seed=5)
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(fixed_plan(app, PassingMethod.REMOTE, spec.vm_names).to_json()))
    root = tmp_path / "root"
    proc = subprocess.Popen(sonic(["run", "sort", "--input", str(data), "--plan", str(plan), "--cluster",
                                   str(cluster_file), "--root", str(root), "--no-learn", *extra], tmp_path),
                            cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: sum(1 for d in journal_lines(root)[1] if d["stage"] == "map") >= 3 or proc.poll() is not None,
                   "split and 3 mappers to be journaled", 300.0)
    finally:
        kill9(proc.pid)
        proc.wait()
    assert proc.returncode == -9, "the run ended before it could be killed mid-job"
    job, done = journal_lines(root)
    assert job and done
    return data, root, job, done


def job_files(spec: ClusterSpec, job: str) -> list[Path]:
    return [p for vm in spec.vms for p in Path(vm.data_dir, "objects", job).rglob("*")]


def bucket_keys(spec: ClusterSpec, job: str) -> int:
    # The cluster's S3 keys for this call only: left in os.environ they would reach every
    # process a later test starts (an embedded S3 server then refuses its own clients' keys).
    with mock.patch.dict(os.environ, client_env(spec)):
        remote = RemoteStore(RemoteSettings.for_cluster(spec))
        return int(remote.client.list_objects_v2(Bucket=remote.settings.bucket, Prefix=f"{job}/").get("KeyCount", 0))


@pytest.mark.parametrize("size", [pytest.param(32_000_000, id="32MB"),
                                  pytest.param(128_000_000, id="128MB", marks=pytest.mark.slow)])
def test_killed_run_resumes_rerunning_only_unfinished_instances(
        cluster: tuple[ClusterSpec, Path], tmp_path: Path, size: int) -> None:
    spec, cluster_file = cluster
    data, root, job, done = start_and_kill(spec, cluster_file, tmp_path, size)
    assert job_files(spec, job), "the killed job's objects are kept (its lease is live) for the resume"
    resumed = subprocess.run(sonic(["run", "sort", "--input", str(data), "--cluster", str(cluster_file), "--root",
                                    str(root), "--no-learn", "--resume", job, "--json"], tmp_path),
                             cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["output_ok"], report["output_detail"]
    rerun = {(m["stage"], m["instance"]) for m in report["instances"]}
    journaled = {(str(d["stage"]), int(d["index"])) for d in done}   # type: ignore[call-overload]
    assert not rerun & journaled, f"re-ran journaled instances: {sorted(rerun & journaled)}"
    assert ("split", 0) in journaled and rerun, (journaled, rerun)
    # A finished job leaves nothing: no objects, no bucket keys, no journal.
    assert not job_files(spec, job) and bucket_keys(spec, job) == 0
    assert not (root / "jobs" / f"{job}.jsonl").exists()


def test_without_resume_the_lease_expires_and_nothing_of_the_job_remains(
        cluster: tuple[ClusterSpec, Path], tmp_path: Path) -> None:
    spec, cluster_file = cluster
    lease_s = 3.0
    data, root, job, _ = start_and_kill(spec, cluster_file, tmp_path, 32_000_000, "--lease", str(lease_s))
    killed_at = time.monotonic()
    wait_until(lambda: not job_files(spec, job) and bucket_keys(spec, job) == 0,
               "the agents to drop the job after its lease", 30.0)
    assert time.monotonic() - killed_at < lease_s + 20
    late = subprocess.run(sonic(["run", "sort", "--input", str(data), "--cluster", str(cluster_file), "--root",
                                 str(root), "--no-learn", "--resume", job], tmp_path),
                          cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=120)
    assert late.returncode == 2, late.stderr
    assert late.stderr.count("\n") == 1 and "can no longer be resumed" in late.stderr, late.stderr
