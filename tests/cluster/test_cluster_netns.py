"""``--mode netns``: namespaces, bridge, tbf shaping, route checks and complete teardown (root)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sonic.cluster.readiness import AgentProgram
from sonic.cluster.spec import ClusterSpec, load_cluster
from sonic.emulation import netns
from sonic.emulation.local import HarnessOptions, client_env, cluster_status, local_cluster
from sonic.emulation.procs import pid_alive

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("require_netns", "require_sshd")]

VM_MBPS = 24.0
S3_MBPS = 48.0
PAYLOAD = 3 * 1024 * 1024          # 25 Mbit: ~1 s at 24 Mbit/s, ~0.5 s at 48 Mbit/s


def sh(*argv: str) -> str:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30).stdout


def assert_nothing_left(spec: ClusterSpec) -> None:
    local = spec.local
    assert local is not None and local.cluster_id
    prefix = f"{netns.NS_PREFIX}{local.cluster_id}"
    assert not [ns for ns in netns.list_namespaces(netns.NS_PREFIX) if ns.startswith(prefix)], "namespaces left"
    links = sh("ip", "-o", "link", "show")
    assert local.cluster_id not in links, f"links left: {links}"
    assert local.cluster_id not in sh("tc", "qdisc", "show")
    assert not {k: p for k, p in local.pids.items() if pid_alive(p)}, "processes left"
    assert not Path(local.root).exists()


def upload_seconds(endpoint: str, bucket: str, key: str, keys: dict[str, str], ns: str | None = None) -> float:
    """Time a PUT of PAYLOAD bytes, from the root namespace or from inside ``ns`` (a child we wait for)."""
    code = (
        f"import boto3, time; s3 = boto3.client('s3', endpoint_url={endpoint!r}, region_name='us-east-1', "
        f"aws_access_key_id={keys['AWS_ACCESS_KEY_ID']!r}, aws_secret_access_key={keys['AWS_SECRET_ACCESS_KEY']!r}); "
        f"body = b'x' * {PAYLOAD:d}; t = time.perf_counter(); s3.put_object(Bucket={bucket!r}, Key={key!r}, Body=body); "
        "print(time.perf_counter() - t)"
    )
    argv = netns.in_ns(ns, [sys.executable, "-c", code])
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return float(result.stdout.strip().splitlines()[-1])


def _real_agent_available() -> bool:
    import importlib.util

    try:
        return bool(importlib.util.find_spec("sonic.runtime.agent") and importlib.util.find_spec("sonic.runtime.client"))
    except ModuleNotFoundError:
        return False


def test_netns_cluster_network_shaping_and_teardown(cluster_root: Path, options: HarnessOptions) -> None:
    # The faithful mode is exercised end to end with the real agent once it exists.
    if _real_agent_available():
        options = HarnessOptions(ssh_config_path=None)
    with local_cluster(2, "netns", cluster_root, vm_mbps=VM_MBPS, s3_mbps=S3_MBPS, s3_latency_ms=20,
                       options=options) as spec:
        local = spec.local
        assert local is not None and local.mode == "netns" and local.bridge and local.subnet
        saved = load_cluster(cluster_root / "cluster.yaml")
        assert saved.local == local
        # One namespace per VM plus the S3 server's, all with this cluster's id.
        assert set(local.namespaces) <= set(netns.list_namespaces(netns.NS_PREFIX))
        assert [vm.netns for vm in spec.vms] == [f"sonic-{local.cluster_id}-vm0", f"sonic-{local.cluster_id}-vm1"]
        octet = local.subnet.split(".")[2]
        assert [vm.host for vm in spec.vms] == [f"10.213.{octet}.10", f"10.213.{octet}.11"]
        assert spec.remote_storage.endpoint_url == f"http://10.213.{octet}.2:9000"
        # Routes go through our bridge; anything else is refused before a packet is sent.
        for vm in spec.vms:
            assert netns.route_dev(vm.host) == local.bridge
            netns.check_route(vm.host, local.bridge)
        with pytest.raises(netns.RouteCheckError, match="not our bridge"):
            netns.check_route("10.213.254.77" if octet != "254" else "10.213.253.77", local.bridge)
        # tbf on both ends of every VM link and of the S3 link.
        for i, vm in enumerate(spec.vms):
            assert "tbf" in netns.qdiscs("eth0", vm.netns) and "rate 24Mbit" in netns.qdiscs("eth0", vm.netns)
            assert "rate 24Mbit" in netns.qdiscs(f"sv{local.cluster_id}h{i}")
            assert "<LOOPBACK,UP" in sh("ip", "-n", vm.netns or "", "-o", "link", "show", "lo")
        s3_ns = f"sonic-{local.cluster_id}-s3"
        assert "rate 48Mbit" in netns.qdiscs("eth0", s3_ns)
        assert "rate 48Mbit" in netns.qdiscs(f"sv{local.cluster_id}hs")
        # No way out: a VM namespace has only its subnet route.
        assert "default" not in sh("ip", "-n", spec.vms[0].netns or "", "route", "show")
        # sshd and agent per VM, reached via the bridge.
        assert {"s3", "sshd-vm0", "sshd-vm1", "agent-vm0", "agent-vm1"} == set(local.pids)
        rows = cluster_status(spec, ping=options.program.ping if options.program else None)
        assert [r["state"] for r in rows] == ["up", "up"]
        # The shaping bites: the S3 link limits a root-namespace upload, the VM link one from vm0.
        bucket = spec.remote_storage.bucket
        assert client_env(spec)["AWS_ACCESS_KEY_ID"].startswith("SONIC")  # the cluster's own pair
        keys = client_env(spec)
        via_s3_link = upload_seconds(spec.remote_storage.endpoint_url or "", bucket, "root", keys)
        via_vm_link = upload_seconds(spec.remote_storage.endpoint_url or "", bucket, "vm0", keys, ns=spec.vms[0].netns)
        print(f"3 MiB upload: {via_s3_link:.2f}s over the S3 link, {via_vm_link:.2f}s from vm0")
        assert via_s3_link >= 0.35, via_s3_link          # 25 Mbit at 48 Mbit/s ~ 0.52 s
        assert via_vm_link >= 0.75, via_vm_link          # 25 Mbit at 24 Mbit/s ~ 1.05 s
    assert_nothing_left(spec)


def test_netns_teardown_when_body_raises(cluster_root: Path, options: HarnessOptions) -> None:
    seen: list[ClusterSpec] = []
    with pytest.raises(RuntimeError, match="test body failed"):
        with local_cluster(1, "netns", cluster_root, vm_mbps=100, options=options) as spec:
            seen.append(spec)
            assert spec.local is not None and set(spec.local.namespaces) <= set(netns.list_namespaces())
            raise RuntimeError("test body failed")
    assert_nothing_left(seen[0])


def test_netns_failed_start_leaves_nothing(
    cluster_root: Path, make_program: Callable[..., AgentProgram], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sonic.emulation import local as local_mod

    made: list[str] = []
    real_create = netns.create_network

    def create_then_note(plan: netns.NetPlan, vm_mbps: float | None, s3_mbps: float | None) -> None:
        made.append(plan.cluster_id)
        real_create(plan, vm_mbps, s3_mbps)

    monkeypatch.setattr(netns, "create_network", create_then_note)
    bad = HarnessOptions(program=make_program("--crash"), ssh_config_path=None, agent_ready_timeout_s=10)
    start = time.monotonic()
    with pytest.raises(local_mod.TransportError, match="exited during start-up"):
        local_mod.cluster_up(2, "netns", cluster_root, vm_mbps=50, options=bad)
    assert time.monotonic() - start < 30
    assert made and not [ns for ns in netns.list_namespaces() if made[0] in ns]
    assert made[0] not in sh("ip", "-o", "link", "show")
    assert not (cluster_root / "cluster.yaml").exists()

