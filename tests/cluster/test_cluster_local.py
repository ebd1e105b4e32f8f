"""The local cluster harness in loopback and ssh modes, and the CLI-facing commands."""

from __future__ import annotations

import os
import signal
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sonic.cluster.readiness import AgentProgram
from sonic.cluster.spec import ClusterSpec, load_cluster
from sonic.emulation.local import HarnessOptions, cluster_down, cluster_status, cluster_up, local_cluster
from sonic.emulation.procs import backoff, pid_alive
from sonic.errors import ClusterFileError, TransportError, UserInputError
from sonic.workflows import cluster_commands as commands


def wait_gone(pid: int, timeout_s: float = 10.0) -> None:
    for _ in backoff(time.monotonic() + timeout_s):
        if not pid_alive(pid):
            return
    raise AssertionError(f"pid {pid} still alive after {timeout_s}s")


def assert_all_gone(spec: ClusterSpec, cluster_file: Path) -> None:
    assert spec.local is not None
    alive = {k: pid for k, pid in spec.local.pids.items() if pid_alive(pid)}
    assert not alive, f"processes left running: {alive}"
    assert not Path(spec.local.root).exists(), "cluster directory (secret, agent data) left behind"
    assert not cluster_file.exists()


def test_loopback_up_status_down(cluster_root: Path, options: HarnessOptions) -> None:
    cluster_file = cluster_root / "cluster.yaml"
    spec = cluster_up(3, "loopback", cluster_root, s3_latency_ms=5, options=options)
    try:
        assert spec.local is not None and spec.local.mode == "loopback" and spec.local.state == "up"
        assert set(spec.local.pids) == {"s3", "agent-vm0", "agent-vm1", "agent-vm2"}
        assert all(pid_alive(pid) for pid in spec.local.pids.values())
        # The file on disk is the one `status`/`down` will read; it round-trips through the loader.
        saved = load_cluster(cluster_file)
        assert saved == spec
        assert [vm.host for vm in saved.vms] == ["127.0.0.1"] * 3
        assert len({vm.agent_port for vm in saved.vms}) == 3
        assert len({vm.data_dir for vm in saved.vms}) == 3
        assert saved.remote_storage.endpoint_url and saved.remote_storage.endpoint_url.startswith("http://127.0.0.1:")
        secret = Path(saved.secret_file or "")
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        rows = commands.status(cluster_file, ping=options.program.ping)  # type: ignore[union-attr]
        assert [(r["name"], r["state"]) for r in rows] == [("vm0", "up"), ("vm1", "up"), ("vm2", "up")]
        assert all(r["pid"] == spec.local.pids[f"agent-{r['name']}"] and r["host"] == "127.0.0.1" for r in rows)
        # An agent that died shows as down.
        os.kill(spec.local.pids["agent-vm1"], signal.SIGKILL)
        wait_gone(spec.local.pids["agent-vm1"])                  # SIGKILL is delivered asynchronously
        rows = cluster_status(spec, ping=options.program.ping)  # type: ignore[union-attr]
        assert [r["state"] for r in rows] == ["up", "down", "up"]
    finally:
        commands.down(cluster_file, options=options)
    assert_all_gone(spec, cluster_file)
    commands.down(cluster_file, options=options)                 # idempotent: nothing left to do


def test_embedded_s3_reachable_with_client_env(cluster_root: Path, options: HarnessOptions) -> None:
    import boto3

    from sonic.emulation.local import client_env

    with local_cluster(1, "loopback", cluster_root, options=options) as spec:
        env = client_env(spec)
        s3 = boto3.client("s3", endpoint_url=spec.remote_storage.endpoint_url, region_name=spec.remote_storage.region,
                          aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
        s3.put_object(Bucket=spec.remote_storage.bucket, Key="k", Body=b"v")
        assert s3.get_object(Bucket=spec.remote_storage.bucket, Key="k")["Body"].read() == b"v"
        # Only the cluster's own key pair (derived from its secret) is accepted: neither the
        # conventional test pair nor another cluster's.
        from botocore.exceptions import ClientError

        from sonic.cluster.s3auth import cluster_credentials

        assert env["AWS_ACCESS_KEY_ID"] != "testing"
        for other in ({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"},
                      cluster_credentials(b"another cluster's secret")):
            stranger = boto3.client("s3", endpoint_url=spec.remote_storage.endpoint_url,
                                    region_name=spec.remote_storage.region,
                                    aws_access_key_id=other["AWS_ACCESS_KEY_ID"],
                                    aws_secret_access_key=other["AWS_SECRET_ACCESS_KEY"])
            with pytest.raises(ClientError):
                stranger.get_object(Bucket=spec.remote_storage.bucket, Key="k")


def test_second_up_over_live_cluster_is_refused(cluster_root: Path, options: HarnessOptions) -> None:
    with local_cluster(1, "loopback", cluster_root, options=options) as spec:
        with pytest.raises(ClusterFileError, match="already running .* run `sonic cluster down` first"):
            cluster_up(1, "loopback", cluster_root, options=options)
        assert load_cluster(cluster_root / "cluster.yaml").local.cluster_id == spec.local.cluster_id  # type: ignore[union-attr]


def test_stale_cluster_file_is_cleaned(cluster_root: Path, options: HarnessOptions) -> None:
    cluster_file = cluster_root / "cluster.yaml"
    spec = cluster_up(1, "loopback", cluster_root, options=options)
    assert spec.local is not None
    stale_copy = cluster_file.read_text()
    for pid in spec.local.pids.values():                        # "the machine rebooted"
        os.kill(pid, signal.SIGKILL)
    for pid in spec.local.pids.values():
        wait_gone(pid)
    rows = commands.status(cluster_file, ping=options.program.ping)  # type: ignore[union-attr]
    assert [r["state"] for r in rows] == ["down"]
    commands.down(cluster_file, options=options)                  # no error
    assert_all_gone(spec, cluster_file)
    # A stale file does not block a new cluster either.
    cluster_file.write_text(stale_copy)
    with local_cluster(1, "loopback", cluster_root, options=options) as fresh:
        assert fresh.local is not None and fresh.local.cluster_id != spec.local.cluster_id


def test_real_vm_cluster_file_is_not_overwritten(cluster_root: Path, options: HarnessOptions) -> None:
    cluster_root.mkdir(parents=True)
    (cluster_root / "cluster.yaml").write_text("vms:\n  - {name: vm0, host: 10.0.0.1}\n")
    with pytest.raises(ClusterFileError, match="real VMs"):
        cluster_up(1, "loopback", cluster_root, options=options)


def test_fixture_tears_down_when_body_raises(cluster_root: Path, options: HarnessOptions) -> None:
    seen: list[ClusterSpec] = []
    with pytest.raises(RuntimeError, match="boom"):
        with local_cluster(2, "loopback", cluster_root, options=options) as spec:
            seen.append(spec)
            raise RuntimeError("boom")
    assert_all_gone(seen[0], cluster_root / "cluster.yaml")


def test_failed_start_cleans_up(
    cluster_root: Path, options: HarnessOptions, make_program: Callable[..., AgentProgram]
) -> None:
    bad = HarnessOptions(program=make_program("--crash"), ssh_config_path=None, agent_ready_timeout_s=10)
    with pytest.raises(TransportError, match="agent vm0 at 127.0.0.1 exited during start-up.*asked to crash"):
        cluster_up(2, "loopback", cluster_root, options=bad)
    assert not (cluster_root / "cluster.yaml").exists()
    assert not list(cluster_root.glob("cluster-*"))


def _interrupting_ping(signum: int | None, real: Any) -> Any:
    def ping(host: str, port: int, secret: bytes, peer_name: str, timeout_s: float) -> dict[str, Any]:
        if signum is None:
            raise KeyboardInterrupt            # Ctrl-C arriving during the readiness wait
        os.kill(os.getpid(), signum)           # SIGTERM: the harness turns it into an interrupt
        return dict(real(host, port, secret, peer_name, timeout_s))
    return ping


@pytest.mark.parametrize("signum", [None, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_during_up_tears_down(cluster_root: Path, program: AgentProgram, signum: int | None) -> None:
    opts = HarnessOptions(program=AgentProgram(program.argv_prefix, _interrupting_ping(signum, program.ping)),
                          ssh_config_path=None)
    pids_seen: list[dict[str, int]] = []
    real_save = ClusterSpec.save

    def spy(self: ClusterSpec, path: Path) -> None:
        if self.local is not None:
            pids_seen.append(dict(self.local.pids))
        real_save(self, path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ClusterSpec, "save", spy)
        with pytest.raises(KeyboardInterrupt):
            cluster_up(2, "loopback", cluster_root, options=opts)
    started = pids_seen[-1]
    assert {"s3", "agent-vm0", "agent-vm1"} <= set(started)
    assert not any(pid_alive(pid) for pid in started.values())
    assert not (cluster_root / "cluster.yaml").exists() and not list(cluster_root.glob("cluster-*"))
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL   # handler restored


def test_ssh_mode_bootstraps_through_sshd(
    cluster_root: Path, options: HarnessOptions, require_sshd: None
) -> None:
    cluster_file = cluster_root / "cluster.yaml"
    spec = commands.up(2, "ssh", cluster_file, options=options)
    try:
        assert spec.local is not None and set(spec.local.pids) == {"s3", "sshd", "agent-vm0", "agent-vm1"}
        saved = load_cluster(cluster_file)                        # key and known_hosts exist: it validates
        for vm in saved.vms:
            assert vm.ssh is not None and vm.ssh.port == saved.vms[0].ssh.port  # type: ignore[union-attr]
            assert vm.ssh.port > 1024 and not vm.ssh.accept_new_host_keys
            assert f"[127.0.0.1]:{vm.ssh.port} ssh-ed25519" in Path(vm.ssh.known_hosts or "").read_text()
            # The agent runs the uploaded archive, under the VM's data dir.
            assert list((Path(vm.data_dir) / "code").iterdir())
            assert stat.S_IMODE((Path(vm.data_dir) / "secret").stat().st_mode) == 0o600
        rows = commands.status(cluster_file, ping=options.program.ping)  # type: ignore[union-attr]
        assert [r["state"] for r in rows] == ["up", "up"]
    finally:
        commands.down(cluster_file, options=options)
    assert_all_gone(spec, cluster_file)


def test_bad_requests_are_user_errors(cluster_root: Path, options: HarnessOptions) -> None:
    with pytest.raises(UserInputError, match="unknown cluster mode"):
        cluster_up(1, "docker", cluster_root, options=options)
    with pytest.raises(UserInputError, match="positive number"):
        cluster_up(0, "loopback", cluster_root, options=options)
    with pytest.raises(UserInputError, match="--vm-mbps needs --mode netns"):
        cluster_up(1, "loopback", cluster_root, vm_mbps=100, options=options)
    with pytest.raises(UserInputError, match="--s3-mbps must be a positive"):
        cluster_up(1, "loopback", cluster_root, s3_mbps=0, options=options)
    assert not cluster_root.exists() or not list(cluster_root.glob("cluster-*"))


def test_netns_needs_root(cluster_root: Path, options: HarnessOptions, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(UserInputError, match="needs root"):
        cluster_up(1, "netns", cluster_root, options=options)


def test_status_without_cluster_file_is_actionable(tmp_path: Path) -> None:
    with pytest.raises(ClusterFileError, match="sonic cluster up --local"):
        commands.status(tmp_path / "nope.yaml")
    commands.down(tmp_path / "nope.yaml")                         # nothing to do, no error


def test_in_process_s3_shaping_in_loopback(cluster_root: Path, options: HarnessOptions) -> None:
    from sonic.emulation.procs import cmdline

    with local_cluster(1, "loopback", cluster_root, s3_mbps=80, options=options) as spec:
        assert spec.local is not None
        assert "--mbps 80" in cmdline(spec.local.pids["s3"])


def _real_agent_missing() -> bool:
    import importlib.util

    try:
        return not (importlib.util.find_spec("sonic.runtime.agent") and importlib.util.find_spec("sonic.runtime.client"))
    except ModuleNotFoundError:
        return True


@pytest.mark.skipif(_real_agent_missing(), reason="sonic.runtime.agent / client have not landed yet")
@pytest.mark.parametrize("mode", ["loopback", "ssh"])
def test_up_with_the_real_agent(cluster_root: Path, mode: str) -> None:
    from sonic.emulation.sshd import SSHD_BINARY

    if mode == "ssh" and not Path(SSHD_BINARY).exists():
        pytest.skip("needs openssh-server")
    opts = HarnessOptions(ssh_config_path=None)
    spec = cluster_up(2, mode, cluster_root, options=opts)
    try:
        rows = cluster_status(spec)
        assert [r["state"] for r in rows] == ["up", "up"]
        assert {r["version"] for r in rows} == {__import__("sonic").__version__}
    finally:
        cluster_down(spec, options=opts)
    assert_all_gone(spec, cluster_root / "cluster.yaml")


def test_emulated_vms_share_the_host_cores_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """`sonic cluster up --local N` claims the host's cores shared out, never more than exist."""
    from sonic.workflows import cluster_commands as commands

    monkeypatch.setattr(commands.os, "cpu_count", lambda: 2)
    assert [commands.fair_cores(n) for n in (1, 2, 3, 8)] == [2, 1, 1, 1]
    monkeypatch.setattr(commands.os, "cpu_count", lambda: 16)
    assert [commands.fair_cores(n) for n in (1, 3, 4)] == [16, 5, 4]
