"""Throwaway sshd (sonic.emulation.sshd) and SSH bootstrap (sonic.cluster.bootstrap)."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from sonic.cluster import bootstrap
from sonic.cluster.bootstrap import (
    AgentLaunch,
    HostKeyError,
    RetryPolicy,
    SSHTimeouts,
    deploy_agent,
    deploy_all,
    open_session,
    resolve_target,
    stop_agent,
)
from sonic.cluster.codebundle import build_bundle
from sonic.cluster.readiness import AgentProgram
from sonic.cluster.spec import SSHSpec, VMSpec
from sonic.emulation.procs import pid_alive, stop_pid
from sonic.emulation.sshd import ClientKeys, SSHServer, keygen, make_client_keys, start_sshd
from sonic.errors import ClusterFileError, TransportError

pytestmark = [pytest.mark.ssh, pytest.mark.usefixtures("require_sshd")]

FAST_RETRY = RetryPolicy(attempts=2, first_s=0.01, max_s=0.05)


@pytest.fixture(scope="module")
def ssh_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ssh")


@pytest.fixture(scope="module")
def keys(ssh_dir: Path) -> ClientKeys:
    return make_client_keys(ssh_dir / "client")


@pytest.fixture(scope="module")
def server(ssh_dir: Path, keys: ClientKeys) -> Iterator[SSHServer]:
    srv = start_sshd(ssh_dir / "sshd", keys)
    try:
        yield srv
    finally:
        stop_pid(srv.pid, str(ssh_dir))
        assert not pid_alive(srv.pid)


def vm_for(server: SSHServer, keys: ClientKeys, tmp: Path, name: str = "vm0", **ssh: object) -> VMSpec:
    spec = SSHSpec(user=server.user, key=str(keys.key), port=server.port, known_hosts=str(keys.known_hosts),
                   connect_timeout_s=5.0)
    return VMSpec(name=name, host=server.host, data_dir=str(tmp / name), ssh=replace(spec, **ssh))  # type: ignore[arg-type]


def test_connect_with_key_and_run(server: SSHServer, keys: ClientKeys, tmp_path: Path) -> None:
    target = resolve_target(vm_for(server, keys, tmp_path), ssh_config_path=None)
    with open_session(target, retry=FAST_RETRY) as session:
        assert session.check("echo ok").strip() == "ok"
        assert session.run("exit 3")[0] == 3


def test_known_hosts_has_server_key(server: SSHServer, keys: ClientKeys) -> None:
    line = f"[127.0.0.1]:{server.port} {server.host_public_key.split()[0]} {server.host_public_key.split()[1]}"
    assert line in keys.known_hosts.read_text().splitlines()


def test_host_key_mismatch_refused(server: SSHServer, keys: ClientKeys, tmp_path: Path) -> None:
    other = keygen(tmp_path / "other_host_key", "impostor")
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{server.port} {' '.join(other.split()[:2])}\n")
    target = resolve_target(vm_for(server, keys, tmp_path, known_hosts=str(known)), ssh_config_path=None)
    start = time.monotonic()
    with pytest.raises(HostKeyError) as info:
        open_session(target, retry=RetryPolicy(attempts=4, first_s=1.0))
    message = str(info.value)
    assert "does not match" in message and f"127.0.0.1:{server.port}" in message
    assert f"ssh-keygen -R '[127.0.0.1]:{server.port}' -f {known}" in message
    assert "\n" not in message
    assert time.monotonic() - start < 1.0                      # never retried


def test_mismatch_refused_even_with_accept_new(server: SSHServer, keys: ClientKeys, tmp_path: Path) -> None:
    other = keygen(tmp_path / "other_host_key", "impostor")
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{server.port} {' '.join(other.split()[:2])}\n")
    vm = vm_for(server, keys, tmp_path, known_hosts=str(known), accept_new_host_keys=True)
    with pytest.raises(HostKeyError, match="does not match"):
        open_session(resolve_target(vm, ssh_config_path=None), retry=FAST_RETRY)


def test_unknown_host_refused_by_default(server: SSHServer, keys: ClientKeys, tmp_path: Path) -> None:
    known = tmp_path / "empty_known_hosts"
    known.write_text("")
    vm = vm_for(server, keys, tmp_path, known_hosts=str(known))
    with pytest.raises(HostKeyError) as info:
        open_session(resolve_target(vm, ssh_config_path=None), retry=FAST_RETRY)
    message = str(info.value)
    assert "not in known_hosts" in message and "accept_new_host_keys: true" in message
    assert f"ssh-keyscan -p {server.port} 127.0.0.1" in message
    assert known.read_text() == ""


def test_unknown_host_accepted_when_opted_in(server: SSHServer, keys: ClientKeys, tmp_path: Path) -> None:
    known = tmp_path / "new_known_hosts"
    vm = vm_for(server, keys, tmp_path, known_hosts=str(known), accept_new_host_keys=True)
    with open_session(resolve_target(vm, ssh_config_path=None), retry=FAST_RETRY) as session:
        assert session.check("echo ok").strip() == "ok"
    assert server.host_public_key.split()[1] in known.read_text()
    # Remembered: now it verifies without the opt-in.
    vm.ssh = replace(vm.ssh, accept_new_host_keys=False)  # type: ignore[arg-type]
    with open_session(resolve_target(vm, ssh_config_path=None), retry=FAST_RETRY) as session:
        assert session.check("echo again").strip() == "again"


def test_wrong_key_is_an_auth_error(server: SSHServer, keys: ClientKeys, tmp_path: Path) -> None:
    keygen(tmp_path / "stranger", "stranger")
    vm = vm_for(server, keys, tmp_path, key=str(tmp_path / "stranger"))
    with pytest.raises(TransportError, match="authentication as .* failed"):
        open_session(resolve_target(vm, ssh_config_path=None), retry=FAST_RETRY)


def test_unreachable_port_names_host_and_port(keys: ClientKeys, tmp_path: Path) -> None:
    from sonic.emulation.sshd import free_port

    port = free_port("127.0.0.1")
    vm = VMSpec(name="vm9", host="127.0.0.1", ssh=SSHSpec(key=str(keys.key), port=port,
                                                          known_hosts=str(keys.known_hosts), connect_timeout_s=2))
    with pytest.raises(TransportError, match=f"cannot reach sshd of VM vm9 at 127.0.0.1:{port} after 2 attempts"):
        open_session(resolve_target(vm, ssh_config_path=None), retry=FAST_RETRY)


def test_ssh_config_is_honoured(server: SSHServer, keys: ClientKeys, tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host sonic-test-alias\n  HostName 127.0.0.1\n  Port {server.port}\n  User {server.user}\n"
        f"  IdentityFile {keys.key}\n  UserKnownHostsFile {keys.known_hosts}\n"
    )
    vm = VMSpec(name="vm0", host="sonic-test-alias", ssh=SSHSpec())
    target = resolve_target(vm, ssh_config_path=config)
    assert (target.hostname, target.port, target.user) == ("127.0.0.1", server.port, server.user)
    assert target.known_hosts == [keys.known_hosts]
    with open_session(target, retry=FAST_RETRY) as session:
        assert session.check("echo via-config").strip() == "via-config"


def test_cluster_file_values_beat_ssh_config(tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Host h1\n  HostName 127.0.0.2\n  Port 2200\n  User alice\n  IdentityFile ~/.ssh/x\n")
    vm = VMSpec(name="vm0", host="h1", ssh=SSHSpec(user="bob", port=2222, key="/k"))
    target = resolve_target(vm, ssh_config_path=config)
    assert (target.hostname, target.port, target.user, target.key_files) == ("127.0.0.2", 2222, "bob", ["/k"])


def test_data_dir_must_be_dedicated() -> None:
    vm = VMSpec(name="vm0", host="h")
    for bad in ("/", "/tmp", "relative/dir", "/home"):
        with pytest.raises(ClusterFileError, match="dedicated absolute directory"):
            bootstrap.check_data_dir(vm, bad)
    assert bootstrap.check_data_dir(vm, "/tmp/sonic-agent/") == "/tmp/sonic-agent"


def _launch(tmp_path: Path, program: AgentProgram, secret: bytes = b"\x01" * 32) -> AgentLaunch:
    bundle = build_bundle(tmp_path / "cache")
    return AgentLaunch(program=program, secret=secret, bundle=bundle, bind="127.0.0.1", port=0,
                       s3_endpoint="http://127.0.0.1:1", s3_bucket="b", s3_region="us-east-1",
                       env={"AWS_ACCESS_KEY_ID": "testing"}, ready_timeout_s=15)


def test_deploy_and_stop_agent(
    server: SSHServer, keys: ClientKeys, tmp_path: Path,
    make_program: Callable[..., AgentProgram],
) -> None:
    vm = vm_for(server, keys, tmp_path / "vms")
    launch = _launch(tmp_path, make_program())
    launched: list[tuple[str, int]] = []
    info = deploy_agent(vm, launch, ssh_config_path=None, on_launched=lambda n, p: launched.append((n, p)))
    data = Path(vm.data_dir)
    try:
        assert launched == [("vm0", info["pid"])]
        assert pid_alive(info["pid"]) and info["version"]
        # Runs the uploaded code, not the checkout: PYTHONPATH points at code/<hash>.
        assert info["sonic_file"] == str(data / "code" / launch.bundle.digest / "sonic" / "__init__.py")
        assert (data / "code" / launch.bundle.digest / "pyproject.toml").is_file()
        secret = data / "secret"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        assert secret.read_text().strip() == launch.secret.hex()
        assert json.loads((data / "agent.json").read_text())["aws_key"] == "testing"
    finally:
        assert stop_agent(vm, ssh_config_path=None) is True
    assert not pid_alive(info["pid"])
    assert not data.exists()
    assert stop_agent(vm, ssh_config_path=None) is False         # idempotent


def test_redeploy_reuses_uploaded_code(
    server: SSHServer, keys: ClientKeys, tmp_path: Path,
    make_program: Callable[..., AgentProgram],
) -> None:
    vm = vm_for(server, keys, tmp_path / "vms")
    launch = _launch(tmp_path, make_program())
    first = deploy_agent(vm, launch, ssh_config_path=None)
    marker = Path(first["code_dir"]) / ".complete"
    stamp = marker.stat().st_mtime_ns
    second = deploy_agent(vm, launch, ssh_config_path=None)      # stops the first agent, keeps the code
    try:
        assert not pid_alive(first["pid"]) and pid_alive(second["pid"])
        assert marker.stat().st_mtime_ns == stamp
    finally:
        stop_agent(vm, ssh_config_path=None)


def test_version_mismatch_is_actionable(
    server: SSHServer, keys: ClientKeys, tmp_path: Path,
    make_program: Callable[..., AgentProgram],
) -> None:
    vm = vm_for(server, keys, tmp_path / "vms")
    try:
        with pytest.raises(TransportError) as info:
            deploy_agent(vm, _launch(tmp_path, make_program("--fake-version", "9.9.9")), ssh_config_path=None)
        message = str(info.value)
        assert "agent vm0 at 127.0.0.1:" in message and "runs sonic 9.9.9" in message
        assert "sonic cluster down" in message
    finally:
        stop_agent(vm, ssh_config_path=None)


def test_crashing_agent_fails_fast_with_its_output(
    server: SSHServer, keys: ClientKeys, tmp_path: Path,
    make_program: Callable[..., AgentProgram],
) -> None:
    vm = vm_for(server, keys, tmp_path / "vms")
    start = time.monotonic()
    with pytest.raises(TransportError) as info:
        deploy_agent(vm, _launch(tmp_path, make_program("--crash")), ssh_config_path=None)
    assert "exited during start-up" in str(info.value) and "asked to crash" in str(info.value)
    assert time.monotonic() - start < 10
    stop_agent(vm, ssh_config_path=None)


def test_deploy_all_bounds_concurrency(
    server: SSHServer, keys: ClientKeys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    make_program: Callable[..., AgentProgram],
) -> None:
    vms = [vm_for(server, keys, tmp_path / "vms", name=f"vm{i}") for i in range(3)]
    active, peak, lock = [0], [0], threading.Lock()
    real_open = bootstrap.open_session

    class Counting:
        def __init__(self, session: bootstrap.Session) -> None:
            self.session = session

        def __enter__(self) -> bootstrap.Session:
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            return self.session

        def __exit__(self, *exc: object) -> None:
            with lock:
                active[0] -= 1
            self.session.close()

    monkeypatch.setattr(bootstrap, "open_session", lambda *a, **k: Counting(real_open(*a, **k)))
    try:
        infos = deploy_all(vms, _launch(tmp_path, make_program()), max_workers=2, ssh_config_path=None)
        assert sorted(infos) == ["vm0", "vm1", "vm2"]
        assert len({info["port"] for info in infos.values()}) == 3
        assert peak[0] == 2
    finally:
        bootstrap.stop_all(vms, ssh_config_path=None)
    assert not any(pid_alive(info["pid"]) for info in infos.values())


def test_secret_file_is_private(tmp_path: Path) -> None:
    from sonic.cluster.readiness import make_secret, read_secret

    path = tmp_path / "secret"
    secret = make_secret(path)
    assert len(secret) == 32 and read_secret(path) == secret
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_timeouts_are_explicit() -> None:
    t = SSHTimeouts()
    assert t.banner_s > 0 and t.auth_s > 0 and t.channel_s > 0
