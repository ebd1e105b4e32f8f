"""The real path for real VMs, on network namespaces (root): every "VM" has its own address
and its own sshd; the cluster file is written by hand, as for EC2 VMs (addresses, ssh user,
key, port, known_hosts, an S3 endpoint); ``sonic cluster up --cluster FILE`` bootstraps it.
A user's app in a temporary directory outside the repository is profiled, planned and run
there through the CLI with validated output, then changed, and the change is what runs next.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from sonic.emulation import netns
from sonic.emulation.procs import pid_alive, stop_pid
from sonic.emulation.sshd import make_client_keys, start_sshd

from .listed_harness import REPO, cluster_yaml, run_json, s3_server, sonic_cli, user_env, write_user_app

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("require_netns", "require_sshd")]

N_VMS = 2
AGENT_PORT = 7370


@pytest.fixture
def netns_vms(tmp_path: Path) -> Iterator[tuple[Path, str, list[dict[str, object]]]]:
    """Namespaces, bridge, an sshd per VM and an S3 server in a namespace of their own; yields
    (work dir, S3 endpoint, the VM entries a user would write). Everything is removed after."""
    plan = netns.NetPlan(secrets.token_hex(3), 0, N_VMS)
    with netns.subnet_lock():
        plan = netns.NetPlan(plan.cluster_id, netns.pick_octet(), N_VMS)
        netns.create_network(plan, vm_mbps=None, s3_mbps=None)
    sshd_pids: list[int] = []
    try:
        for addr in [plan.s3_ip, *(plan.vm_ip(i) for i in range(N_VMS))]:
            netns.check_route(addr, plan.bridge)     # never talk to an address not behind our bridge
        keys = make_client_keys(tmp_path / "keys")
        vms: list[dict[str, object]] = []
        for i in range(N_VMS):
            server = start_sshd(tmp_path / f"sshd-vm{i}", keys, plan.vm_ip(i), 22, netns=plan.vm_ns(i))
            sshd_pids.append(server.pid)
            vms.append({"name": f"vm{i}", "host": plan.vm_ip(i), "agent_port": AGENT_PORT,
                        "data_dir": str(tmp_path / f"vm{i}-data"), "cores": 2, "memory_mb": 2048,
                        "price_per_hour": 0.0416,
                        "ssh": {"user": server.user, "key": str(keys.key), "port": 22,
                                "known_hosts": str(keys.known_hosts)}})
        with s3_server(tmp_path / "s3", plan.s3_ip, netns.in_ns(plan.s3_ns, [])) as endpoint:
            work = tmp_path / "work"
            work.mkdir()
            yield work, endpoint, vms
    finally:
        for pid in sshd_pids:
            stop_pid(pid, str(tmp_path))
        for ns in plan.namespaces:   # anything still running in our own namespaces is ours
            for pid in netns.namespace_pids(ns):
                stop_pid(pid, "")
        problems = netns.destroy_network(plan.namespaces, plan.host_veths, plan.bridge)
        assert not problems, problems


def test_hand_written_netns_cluster_profile_plan_run_change(
    netns_vms: tuple[Path, str, list[dict[str, object]]], tmp_path: Path
) -> None:
    work, endpoint, vms = netns_vms
    assert not work.resolve().is_relative_to(REPO)
    env = user_env(tmp_path / "home")
    cluster_file = work / "cluster.yaml"
    cluster_file.write_text(cluster_yaml(vms, endpoint))
    cf = ["--cluster", str(cluster_file)]

    up = sonic_cli(["cluster", "up", *cf], work, env)
    assert up.returncode == 0, up.stdout + up.stderr
    assert sum("agent up on port 7370" in line for line in up.stdout.splitlines()) == N_VMS
    try:
        status = json.loads(sonic_cli(["cluster", "status", "--json", *cf], work, env).stdout)
        assert [(row["host"], row["state"]) for row in status] == [(vm["host"], "up") for vm in vms]

        write_user_app(work, 2)
        (work / "notes.txt").write_text("\n\n".join("alpha beta gamma delta " * 3 for _ in range(6)))
        profile = sonic_cli(["profile", "mymodule:app", "--sizes", "2KB,4KB,8KB", "--runs", "2", *cf], work, env)
        assert profile.returncode == 0, profile.stderr
        plan = run_json(["plan", "mymodule:app", "--input", "notes.txt", *cf], work, env)
        assert plan["app"] == "wordcount" and plan["stages"]
        first = run_json(["run", "mymodule:app", "--input", "notes.txt", *cf], work, env)
        assert first["output_ok"], first["output_detail"]

        write_user_app(work, 15)             # the change is what runs next (another size: no stale .pyc)
        second = sonic_cli(["run", "mymodule:app", "--input", "notes.txt", "-o", "out", *cf], work, env)
        assert second.returncode == 0, second.stderr
        assert "(factor 15)" in second.stdout and "output ok" in second.stdout
        assert (work / "out" / "total" / "0" / "total").read_text() == str(15 * 6 * 12)
        for vm in vms:   # one code directory per version of the app on every VM
            assert len(list((Path(str(vm["data_dir"])) / "apps").iterdir())) == 2
        pids = [json.loads((Path(str(vm["data_dir"])) / "agent.json").read_text())["pid"] for vm in vms]
    finally:
        down = sonic_cli(["cluster", "down", *cf], work, env)
    assert down.returncode == 0, down.stderr
    assert not any(pid_alive(pid) for pid in pids)
    assert not any(Path(str(vm["data_dir"])).exists() for vm in vms)
