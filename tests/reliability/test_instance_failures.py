"""A failing instance (exception, killed worker, hang) is retried on its own, a bounded number
of times; past the bound the job fails naming stage, instance, VM and error, and leaves no
objects behind. Real agents, real worker processes (loopback cluster)."""

from __future__ import annotations

from pathlib import Path

import pytest
from faultapps import control_doc, write_input
from reliability_helpers import FAULTY_SPEC, make_coordinator, worker_pids

from sonic.app import load_app
from sonic.cluster.spec import ClusterSpec
from sonic.errors import ExecutionError
from sonic.metrics import RunResult
from sonic.plan import PassingMethod, fixed_plan
from sonic.runtime.remote import RemoteSettings, RemoteStore

PARTS = 4
TARGET = 1


def run_faulty(spec: ClusterSpec, tmp_path: Path, mode: str, **coordinator_kwargs: object) -> RunResult:
    app = load_app(FAULTY_SPEC)
    control = tmp_path / "control"
    control.mkdir()
    input_path = write_input(tmp_path / "control.json", control_doc(control, PARTS, mode, TARGET))
    coordinator = make_coordinator(spec, **coordinator_kwargs)
    try:
        return coordinator.execute(app, FAULTY_SPEC, input_path, fixed_plan(app, PassingMethod.DIRECT, spec.vm_names))
    finally:
        coordinator.close()


def attempts(result: RunResult, stage: str) -> dict[int, int]:
    return {m.instance: m.attempt for m in result.instances if m.stage == stage}


@pytest.mark.parametrize("mode", ["raise-once", "kill-once"])
def test_failed_instance_alone_is_retried(shared_cluster: ClusterSpec, tmp_path: Path, mode: str) -> None:
    result = run_faulty(shared_cluster, tmp_path, mode)
    assert result.output_ok, result.output_detail
    work = attempts(result, "work")
    assert work == {i: (2 if i == TARGET else 1) for i in range(PARTS)}, work
    assert attempts(result, "source") == {0: 1} and attempts(result, "join") == {0: 1}


def test_hung_instance_is_killed_by_its_timeout_and_retried(shared_cluster: ClusterSpec, tmp_path: Path) -> None:
    before = {pid for pids in worker_pids(shared_cluster).values() for pid in pids}
    result = run_faulty(shared_cluster, tmp_path, "hang-once", instance_timeout_s=3.0)
    assert result.output_ok, result.output_detail
    assert attempts(result, "work")[TARGET] == 2
    # The hung worker was killed (not leaked): the pools hold only live workers, and at most
    # one of the workers seen before the run has gone.
    after = {pid for pids in worker_pids(shared_cluster).values() for pid in pids}
    assert len(before - after) <= 1


def test_always_failing_instance_fails_the_job_precisely(shared_cluster: ClusterSpec, tmp_path: Path) -> None:
    with pytest.raises(ExecutionError) as info:
        run_faulty(shared_cluster, tmp_path, "raise-always")
    message = str(info.value)
    assert "\n" not in message
    assert f"stage 'work' instance {TARGET} failed 3 times" in message
    assert "last on VM vm" in message and "injected failure in work instance 1" in message
    # Nothing of the failed job is left: not on the VMs, not in the bucket.
    for vm in shared_cluster.vms:
        objects = Path(vm.data_dir, "objects")
        assert not any(objects.iterdir()), f"{vm.name} kept objects of a failed job"
    remote = RemoteStore(RemoteSettings.for_cluster(shared_cluster))
    assert remote.client.list_objects_v2(Bucket=remote.settings.bucket).get("KeyCount", 0) == 0
