"""``sonic cluster up --cluster FILE`` with VMs listed by hand, reached over a real sshd.

The "VMs" are two agents behind one real OpenSSH server on loopback (the netns variant, with
one address and sshd per VM, is in test_cluster_netns_listed.py). Everything goes through the
``sonic`` CLI from a directory outside the repository, as a user would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from sonic.emulation.procs import pid_alive, stop_pid
from sonic.emulation.sshd import SSHServer, make_client_keys, start_sshd

from .listed_harness import REPO, cluster_yaml, run_json, s3_server, sonic_cli, user_env, write_user_app

pytestmark = [pytest.mark.ssh, pytest.mark.usefixtures("require_sshd")]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str], SSHServer, Path, str]]:
    keys = make_client_keys(tmp_path / "keys")
    server = start_sshd(tmp_path / "sshd", keys)
    try:
        with s3_server(tmp_path / "s3") as endpoint:
            work = tmp_path / "work"
            work.mkdir()
            assert not work.resolve().is_relative_to(REPO)
            yield work, user_env(tmp_path / "home"), server, keys.key, endpoint
    finally:
        stop_pid(server.pid, str(tmp_path))


def vms(server: SSHServer, key: Path, tmp: Path, **extra: object) -> list[dict[str, object]]:
    known = key.parent / "known_hosts"
    return [
        {"name": f"vm{i}", "host": "127.0.0.1", "agent_port": port, "data_dir": str(tmp / f"agent-vm{i}"),
         "cores": 2, "memory_mb": 2048, "price_per_hour": 0.05, **(extra if i == 0 else {}),
         "ssh": {"user": server.user, "key": str(key), "port": server.port, "known_hosts": str(known)}}
        for i, port in enumerate(free_ports(2))
    ]


def free_ports(n: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def agent_pids(cluster_file: Path) -> list[int]:
    import yaml

    doc = yaml.safe_load(cluster_file.read_text())
    pids = []
    for vm in doc["vms"]:
        info = Path(vm["data_dir"]) / "agent.json"
        if info.is_file():
            pids.append(int(json.loads(info.read_text())["pid"]))
    return pids


def test_listed_vms_up_run_change_down(setup: tuple[Path, dict[str, str], SSHServer, Path, str], tmp_path: Path) -> None:
    work, env, server, key, endpoint = setup
    cluster_file = work / "cluster.yaml"
    cluster_file.write_text(cluster_yaml(vms(server, key, tmp_path), endpoint))
    up = sonic_cli(["cluster", "up", "--cluster", str(cluster_file)], work, env)
    assert up.returncode == 0, up.stderr
    lines = up.stdout.splitlines()
    assert sum("agent up on port" in line for line in lines) == 2, up.stdout   # one progress line per VM
    assert "# my VMs, written by hand" in cluster_file.read_text()            # the user's file kept as written
    pids = agent_pids(cluster_file)
    try:
        status = json.loads(sonic_cli(["cluster", "status", "--json", "--cluster", str(cluster_file)], work, env).stdout)
        assert [row["state"] for row in status] == ["up", "up"]
        write_user_app(work, 1)
        (work / "notes.txt").write_text("one two three\n\nfour five\n\nsix seven\n")
        first = run_json(["run", "mymodule:app", "--input", "notes.txt", "--cluster", str(cluster_file)], work, env)
        assert first["output_ok"], first["output_detail"]
        write_user_app(work, 13)             # the change must be what runs next (another size: no stale .pyc)
        second = run_json(["run", "mymodule:app", "--input", "notes.txt", "--cluster", str(cluster_file)], work, env)
        assert second["output_ok"] and "total 91" in str(second["output_detail"]), second["output_detail"]
    finally:
        down = sonic_cli(["cluster", "down", "--cluster", str(cluster_file)], work, env)
    assert down.returncode == 0, down.stderr
    assert pids and not any(pid_alive(pid) for pid in pids)
    assert not (tmp_path / "agent-vm0").exists() and not (tmp_path / "agent-vm1").exists()


def test_failed_vm_leaves_nothing_started(setup: tuple[Path, dict[str, str], SSHServer, Path, str],
                                          tmp_path: Path) -> None:
    work, env, server, key, endpoint = setup
    cluster_file = work / "cluster.yaml"
    cluster_file.write_text(cluster_yaml(vms(server, key, tmp_path, python="/nonexistent/python3"), endpoint))
    up = sonic_cli(["cluster", "up", "--cluster", str(cluster_file)], work, env)
    assert up.returncode == 1
    failed = [line for line in up.stdout.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and "vm0" in failed[0] and "has no Python at '/nonexistent/python3'" in failed[0]
    assert up.stderr.strip().splitlines()[-1].startswith("error: cluster up failed on 1 of 2 VMs (vm0)")
    assert agent_pids(cluster_file) == []
    assert not (tmp_path / "agent-vm1").exists()        # vm1 had come up: stopped and cleaned again


def test_unknown_host_key_is_refused_unless_the_file_opts_in(
    setup: tuple[Path, dict[str, str], SSHServer, Path, str], tmp_path: Path
) -> None:
    work, env, server, key, endpoint = setup
    cluster_file = work / "cluster.yaml"
    listed = vms(server, key, tmp_path)[:1]
    empty = tmp_path / "empty_known_hosts"
    listed[0]["ssh"]["known_hosts"] = str(empty)  # type: ignore[index]
    cluster_file.write_text(cluster_yaml(listed, endpoint))
    up = sonic_cli(["cluster", "up", "--cluster", str(cluster_file)], work, env)
    assert up.returncode == 1 and "is not in known_hosts" in up.stdout
    listed = vms(server, key, tmp_path)[:1]
    listed[0]["ssh"].update(known_hosts=str(empty), accept_new_host_keys="true")  # type: ignore[union-attr]
    cluster_file.write_text(cluster_yaml(listed, endpoint))
    up = sonic_cli(["cluster", "up", "--cluster", str(cluster_file)], work, env)
    assert up.returncode == 0, up.stderr
    assert f"[127.0.0.1]:{server.port}" in empty.read_text()    # remembered, as ssh's accept-new does
    assert sonic_cli(["cluster", "down", "--cluster", str(cluster_file)], work, env).returncode == 0
