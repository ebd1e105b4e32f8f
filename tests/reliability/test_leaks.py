"""Nothing leaks: a VM declared lost that comes back drops the job's objects; idle warm workers
are stopped after their idle time and their number per agent is bounded. Real agents, real
worker processes, SIGSTOP/SIGCONT of a real agent."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from reliability_helpers import FAST_HEARTBEAT, agent_pid, make_coordinator, wait_until

from sonic.app import load_app
from sonic.cluster.spec import ClusterSpec
from sonic.plan import PassingMethod, fixed_plan
from sonic.runtime.agent import WorkerPool
from sonic.runtime.client import Timeouts
from sonic.runtime.scheduler import Event, InstanceFinished


def job_dirs(spec: ClusterSpec, vm: str) -> list[Path]:
    objects = Path(spec.vm(vm).data_dir, "objects")
    return [p for p in objects.iterdir() if p.is_dir()] if objects.exists() else []


def test_vm_declared_lost_drops_the_jobs_objects_when_it_returns(fresh_cluster: ClusterSpec, sort_input: Path) -> None:
    spec = fresh_cluster
    app = load_app("sort")
    stopped: list[str] = []

    def stop_first_mapper_vm(event: Event) -> None:
        # Freeze the VM holding the first map output: it is declared lost and its work redone.
        if isinstance(event, InstanceFinished) and event.stage == "map" and not stopped:
            stopped.append(event.vm)
            os.kill(agent_pid(spec, event.vm), signal.SIGSTOP)

    coordinator = make_coordinator(spec, heartbeat=FAST_HEARTBEAT, observer=stop_first_mapper_vm,
                                   timeouts=Timeouts(connect_s=2.0, control_s=10.0, transfer_idle_s=5.0, lease_s=3.0))
    try:
        result = coordinator.execute(app, "sort", sort_input, fixed_plan(app, PassingMethod.VM, spec.vm_names))
        assert stopped and job_dirs(spec, stopped[0]), "the frozen VM holds the job's objects"
    finally:
        coordinator.close()
        for vm in stopped:
            os.kill(agent_pid(spec, vm), signal.SIGCONT)
    assert result.output_ok, result.output_detail
    assert stopped[0] not in {m.vm for m in result.instances if m.stage == "reduce"}
    # Back again: the job's lease ran out while it was frozen, so it drops the objects itself.
    wait_until(lambda: not job_dirs(spec, stopped[0]), "the returned VM to drop the job's objects", 30.0)
    assert all(not job_dirs(spec, vm.name) for vm in spec.vms)


def test_idle_workers_are_reaped_and_bounded(tmp_path: Path) -> None:
    pool = WorkerPool(2, tmp_path / "workers.log", 60.0, idle_s=0.5, max_idle=3)
    try:
        assert pool.warm("sort") == 2
        assert pool.warm("sort") == 2          # already warm: nothing new started
        pool.warm("video")                     # 4 would be idle: the least recently used goes
        assert pool.idle_count() == 3
        first = pool.pids()
        assert len(first) == 3
        wait_until(lambda: pool.reap() >= 0 and pool.idle_count() == 0, "idle workers to be reaped", 20.0)
        assert pool.pids() == []
        for pid in first:
            wait_until(lambda pid=pid: not _alive(pid), f"worker {pid} to exit", 10.0)
    finally:
        pool.stop()


def test_warm_does_not_take_slots_a_run_needs(tmp_path: Path) -> None:
    pool = WorkerPool(1, tmp_path / "workers.log", 60.0)
    try:
        worker, _ = pool.acquire("sort", wait_s=5.0)    # the only slot is busy (a long instance)
        assert pool.warm("sort") == 1                    # a warm still completes, at once
        pool.release(worker)
        again, cold = pool.acquire("sort", wait_s=5.0)
        assert cold is None                               # served warm
        pool.release(again)
    finally:
        pool.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of this process is exited, not alive
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def test_cluster_gc_removes_jobs_that_no_longer_exist(fresh_cluster: ClusterSpec, tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    from sonic.emulation.local import client_env
    from sonic.runtime.client import AgentClient
    from sonic.runtime.objects import file_checksum
    from sonic.runtime.protocol import read_secret
    from sonic.runtime.remote import RemoteSettings, RemoteStore

    spec = fresh_cluster
    assert spec.secret_file
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(4096))
    vm = spec.vms[0]
    client = AgentClient(vm.host, vm.agent_port, read_secret(spec.secret_file), vm.name)
    os.environ.update(client_env(spec))
    remote = RemoteStore(RemoteSettings.for_cluster(spec))
    remote.ensure_bucket()
    try:
        client.lease("livejob", 300.0)
        for job in ("deadjob", "livejob"):
            client.put_file(job, "s/0/x", blob, file_checksum(blob))
            remote.upload(blob, f"{job}/s/0/x")
        cluster_file = tmp_path / "cluster.yaml"
        spec.save(cluster_file)
        gc = subprocess.run([sys.executable, "-m", "sonic.cli", "cluster", "gc", "--json", "--cluster",
                             str(cluster_file)], capture_output=True, text=True, timeout=120)
        assert gc.returncode == 0, gc.stderr
        report = json.loads(gc.stdout)
        assert report["agents"][vm.name]["removed"] == ["deadjob"] and report["bucket"]["removed"] == ["deadjob"]
        assert [p.name for p in job_dirs(spec, vm.name)] == ["livejob"]
        keys = remote.client.list_objects_v2(Bucket=remote.settings.bucket).get("Contents", [])
        assert [k["Key"] for k in keys] == ["livejob/s/0/x"]
    finally:
        client.cancel("livejob", "test over")
        remote.delete_prefix("livejob/")
        client.close()
