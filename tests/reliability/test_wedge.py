"""Nothing wedges a cluster: a stage that never returns, abandoned by a killed `sonic run`;
concurrent warms of one agent; stage timeouts. Real agents, real worker processes, a real
`sonic run` process killed with SIGKILL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from faultapps import control_doc, write_input
from reliability_helpers import FAULTY_SPEC, kill9, make_coordinator, options, wait_until, worker_pids

from sonic.app import App, load_app
from sonic.cluster.spec import ClusterSpec
from sonic.emulation.local import local_cluster
from sonic.errors import ExecutionError
from sonic.plan import PassingMethod, fixed_plan
from sonic.runtime.client import AgentClient, Timeouts
from sonic.runtime.protocol import read_secret

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[ClusterSpec, Path]]:
    """A 2-VM loopback cluster of its own (its file saved, for `sonic run` processes)."""
    with local_cluster(2, "loopback", tmp_path / "cluster", options=options()) as spec:
        path = tmp_path / "cluster.yaml"
        spec.save(path)
        yield spec, path


def clients(spec: ClusterSpec) -> list[AgentClient]:
    assert spec.secret_file
    secret = read_secret(spec.secret_file)
    return [AgentClient(vm.host, vm.agent_port, secret, vm.name, Timeouts(connect_s=2.0, control_s=10.0))
            for vm in spec.vms]


def busy(spec: ClusterSpec) -> int:
    total = 0
    for client in clients(spec):
        try:
            total += int(client.call("ping")["busy"])
        finally:
            client.close()
    return total


def faulty_input(tmp_path: Path, name: str, mode: str, hang_s: float = 3600.0) -> Path:
    control = tmp_path / f"control-{name}"
    control.mkdir()
    return write_input(tmp_path / f"{name}.json", control_doc(control, 4, mode, 1, hang_s=hang_s))


def plan_file(spec: ClusterSpec, app: App, path: Path) -> Path:
    path.write_text(json.dumps(fixed_plan(app, PassingMethod.DIRECT, spec.vm_names).to_json()))
    return path


def test_hung_stage_abandoned_by_a_killed_run_does_not_wedge_the_cluster(
        cluster: tuple[ClusterSpec, Path], tmp_path: Path) -> None:
    spec, cluster_file = cluster
    app = load_app(FAULTY_SPEC)
    plan = plan_file(spec, app, tmp_path / "plan.json")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT), os.environ.get("PYTHONPATH")]))}
    env.pop("SONIC_DEBUG", None)
    hung = subprocess.Popen(
        [sys.executable, "-m", "sonic.cli", "run", FAULTY_SPEC, "--input", str(faulty_input(tmp_path, "hang", "hang-always")),
         "--plan", str(plan), "--cluster", str(cluster_file)],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        # The hanging instance runs once every other "work" instance finished and returned its slot.
        wait_until(lambda: busy(spec) == 1, "the hanging instance to be the only one running", 60.0)
    finally:
        kill9(hung.pid)
        hung.wait()
    # The agent notices its coordinator is gone and kills the instance: the slot is free again.
    wait_until(lambda: busy(spec) == 0, "the abandoned instance to be killed", 30.0)
    before = {pid for pids in worker_pids(spec).values() for pid in pids}
    # The next job on the same cluster completes normally (with several concurrent warms of
    # the same agents racing it, which used to deadlock the slot accounting).
    coordinator = make_coordinator(spec)
    extra = clients(spec)
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            warms = [pool.submit(c.warm, FAULTY_SPEC) for c in extra for _ in range(2)]
            result = coordinator.execute(app, FAULTY_SPEC, faulty_input(tmp_path, "next", "none"),
                                         fixed_plan(app, PassingMethod.DIRECT, spec.vm_names))
            assert all(w.result(timeout=120).ok for w in warms)
    finally:
        coordinator.close()
        for c in extra:
            c.close()
    assert result.output_ok, result.output_detail
    # The killed worker is gone for good (no orphan left holding memory).
    after = {pid for pids in worker_pids(spec).values() for pid in pids}
    assert all(not _alive(pid) for pid in before - after)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_timed_out_instance_fails_naming_stage_instance_vm_and_limit(
        cluster: tuple[ClusterSpec, Path], tmp_path: Path) -> None:
    spec, _ = cluster
    app = load_app(FAULTY_SPEC)
    coordinator = make_coordinator(spec, instance_timeout_s=1.5, max_attempts=2)
    try:
        with pytest.raises(ExecutionError) as info:
            coordinator.execute(app, FAULTY_SPEC, faulty_input(tmp_path, "t", "hang-always"),
                                fixed_plan(app, PassingMethod.DIRECT, spec.vm_names))
    finally:
        coordinator.close()
    message = str(info.value)
    assert "\n" not in message
    assert "stage 'work' instance 1" in message and "last on VM vm" in message
    assert "stage timeout of 1.5s" in message, message
    wait_until(lambda: busy(spec) == 0, "no instance left running", 10.0)


def test_stage_timeout_comes_from_run_then_stage_then_default(cluster: tuple[ClusterSpec, Path]) -> None:
    spec, _ = cluster
    app = App("timeouts")

    @app.stage(timeout_s=7)
    def first(ctx: object) -> None: ...

    @app.stage(after="first")
    def second(ctx: object) -> None: ...

    default = make_coordinator(spec, timeouts=Timeouts(stage_s=42.0))
    override = make_coordinator(spec, instance_timeout_s=3.0)
    try:
        assert default.stage_timeout(app, "first") == 7.0
        assert default.stage_timeout(app, "second") == 42.0
        assert override.stage_timeout(app, "first") == 3.0
    finally:
        default.close()
        override.close()
