"""Emulated VM network for ``--mode netns``: namespaces, veth pairs, a bridge, tbf shaping.

Only iproute2 (``ip``, ``tc``) is used. Layout for a cluster with id ``ID`` and subnet
``10.213.K.0/24`` (K is the first /24 of the dedicated 10.213.0.0/16 range not in use, so
two clusters on one machine never share addresses):

    root ns:  bridge sbrID  10.213.K.1/24
              svIDh<i> (bridge port)  <-veth->  ns sonic-ID-vm<i>: eth0 10.213.K.(10+i)/24, lo up
              svIDhs   (bridge port)  <-veth->  ns sonic-ID-s3:     eth0 10.213.K.2/24,      lo up

Namespaces get no default route: a VM can reach only the bridge subnet, never the outside.

Shaping: ``tc qdisc replace ... root tbf`` on both ends of a veth pair limits both directions
(egress inside the namespace = the VM sending, egress of the bridge port = the VM receiving).

Network safety (DESIGN.md section 7): :func:`check_route` must pass for an address before
any packet is sent to it; the subnet check refuses to start when the range is in use.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sonic.errors import NetnsError, RouteCheckError

SUBNET_BASE = "10.213"           # dedicated /16; each cluster takes one /24 of it
BRIDGE_HOST = 1                  # 10.213.K.1: the bridge (root namespace side)
S3_HOST = 2                      # 10.213.K.2: the S3 server's namespace
FIRST_VM_HOST = 10               # 10.213.K.10 + i: VM i
MAX_VMS = 240                    # .10 .. .249
NS_PREFIX = "sonic-"             # every namespace we create starts with this
# Every ip/tc call is local and instant; the bound only protects against a wedged netlink.
IP_TIMEOUT_S = 15.0
# Serialises subnet choice between concurrent `cluster up` runs on this machine.
LOCK_FILE = Path("/run/sonic-netns.lock")
# tbf queue: 50 ms of backlog absorbs TCP bursts without adding much latency under load.
TBF_LATENCY = "50ms"
# tbf bucket: at least one 64 KiB GSO super-packet (veths hand those to the qdisc whole),
# and 4 ms worth of rate so the timer granularity never caps the rate below the target.
TBF_MIN_BURST_BYTES = 64 * 1024
TBF_BURST_SECONDS = 0.004


def _run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True, timeout=IP_TIMEOUT_S)
    except FileNotFoundError:
        raise NetnsError(f"{argv[0]} not found; install iproute2 (apt-get install -y iproute2)") from None
    except subprocess.TimeoutExpired:
        raise NetnsError(f"`{' '.join(argv)}` did not finish within {IP_TIMEOUT_S:g}s") from None
    if check and result.returncode != 0:
        raise NetnsError(f"`{' '.join(argv)}` failed: {result.stderr.strip() or result.stdout.strip()}")
    return result


def in_ns(netns: str | None, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)


def netns_unusable_reason() -> str | None:
    """None if this process can create namespaces, else a one-line reason."""
    if os.geteuid() != 0:
        return "--mode netns needs root (network namespaces, bridges and tc); use --mode loopback or ssh, or run as root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"--mode netns needs `{tool}` from iproute2; install it: apt-get install -y iproute2"
    probe = f"{NS_PREFIX}probe-{os.getpid()}"
    made = _run(["ip", "netns", "add", probe], check=False)
    if made.returncode != 0:
        return f"--mode netns: this system does not allow network namespaces ({made.stderr.strip()})"
    _run(["ip", "netns", "del", probe], check=False)
    return None


@dataclass(frozen=True)
class NetPlan:
    """Names and addresses of one cluster's network (pure data, derived from id and subnet)."""

    cluster_id: str
    octet: int
    n_vms: int

    @property
    def subnet(self) -> str:
        return f"{SUBNET_BASE}.{self.octet}.0/24"

    def addr(self, host: int) -> str:
        return f"{SUBNET_BASE}.{self.octet}.{host}"

    @property
    def bridge(self) -> str:
        return f"sbr{self.cluster_id}"

    @property
    def bridge_ip(self) -> str:
        return self.addr(BRIDGE_HOST)

    @property
    def s3_ns(self) -> str:
        return f"{NS_PREFIX}{self.cluster_id}-s3"

    @property
    def s3_ip(self) -> str:
        return self.addr(S3_HOST)

    def vm_ns(self, i: int) -> str:
        return f"{NS_PREFIX}{self.cluster_id}-vm{i}"

    def vm_ip(self, i: int) -> str:
        return self.addr(FIRST_VM_HOST + i)

    def host_veth(self, tag: str) -> str:
        return f"sv{self.cluster_id}h{tag}"       # <= 15 chars (IFNAMSIZ) for ids of 6 hex digits

    def peer_veth(self, tag: str) -> str:
        return f"sv{self.cluster_id}p{tag}"

    @property
    def namespaces(self) -> list[str]:
        return [self.s3_ns, *(self.vm_ns(i) for i in range(self.n_vms))]

    @property
    def host_veths(self) -> list[str]:
        return [self.host_veth("s"), *(self.host_veth(str(i)) for i in range(self.n_vms))]


@contextmanager
def subnet_lock() -> Iterator[None]:
    """Exclusive while choosing and claiming a subnet, so two `up`s never pick the same one."""
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK_FILE, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _in_use_octets() -> set[int]:
    """Third octets of 10.213.x.y found on any address or route of the root namespace."""
    text = _run(["ip", "-o", "-4", "addr", "show"]).stdout + _run(["ip", "-4", "route", "show", "table", "all"]).stdout
    return {int(m) for m in re.findall(rf"\b{re.escape(SUBNET_BASE)}\.(\d+)\.\d+", text)}


def pick_octet() -> int:
    used = _in_use_octets()
    for octet in range(256):
        if octet not in used:
            return octet
    raise NetnsError(f"all of {SUBNET_BASE}.0.0/16 is in use; run `sonic cluster down` for old clusters")


def route_dev(addr: str) -> str | None:
    out = _run(["ip", "-o", "route", "get", addr], check=False).stdout
    match = re.search(r"\bdev (\S+)", out)
    return match.group(1) if match else None


def check_route(addr: str, bridge: str) -> None:
    """Refuse unless ``addr`` routes through ``bridge`` (our own): nothing may leave the host."""
    dev = route_dev(addr)
    if dev != bridge:
        raise RouteCheckError(
            f"refusing to send to {addr}: `ip route get {addr}` goes via {dev or 'no device'}, not our bridge {bridge}; "
            f"another network uses {SUBNET_BASE}.x.x here: remove it or run `sonic cluster down`"
        )


def _tbf(dev: str, mbps: float, netns: str | None) -> None:
    rate_Bps = mbps * 1e6 / 8
    burst = max(TBF_MIN_BURST_BYTES, int(rate_Bps * TBF_BURST_SECONDS))
    _run(in_ns(netns, ["tc", "qdisc", "replace", "dev", dev, "root", "tbf",
                       "rate", f"{mbps:g}mbit", "burst", str(burst), "latency", TBF_LATENCY]))


def _attach(plan: NetPlan, ns: str, tag: str, addr: str, mbps: float | None) -> None:
    host, peer = plan.host_veth(tag), plan.peer_veth(tag)
    _run(["ip", "netns", "add", ns])
    _run(["ip", "link", "add", host, "type", "veth", "peer", "name", peer])
    _run(["ip", "link", "set", peer, "netns", ns])
    _run(["ip", "-n", ns, "link", "set", peer, "name", "eth0"])
    _run(["ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0"])
    _run(["ip", "-n", ns, "link", "set", "lo", "up"])
    _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
    _run(["ip", "link", "set", host, "master", plan.bridge])
    _run(["ip", "link", "set", host, "up"])
    if mbps:
        _tbf("eth0", mbps, ns)   # VM -> network
        _tbf(host, mbps, None)   # network -> VM


def create_network(plan: NetPlan, vm_mbps: float | None, s3_mbps: float | None) -> None:
    """Create bridge, namespaces, veths and qdiscs. The caller records ``plan`` first so a
    failure half-way is cleaned up by :func:`destroy_network` (which tolerates absences)."""
    _run(["ip", "link", "add", plan.bridge, "type", "bridge"])
    _run(["ip", "addr", "add", f"{plan.bridge_ip}/24", "dev", plan.bridge])
    _run(["ip", "link", "set", plan.bridge, "up"])
    _attach(plan, plan.s3_ns, "s", plan.s3_ip, s3_mbps)
    for i in range(plan.n_vms):
        _attach(plan, plan.vm_ns(i), str(i), plan.vm_ip(i), vm_mbps)


def namespace_pids(ns: str) -> list[int]:
    out = _run(["ip", "netns", "pids", ns], check=False).stdout
    return [int(tok) for tok in out.split() if tok.isdigit()]


def list_namespaces(prefix: str = NS_PREFIX) -> list[str]:
    out = _run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip() and line.split()[0].startswith(prefix)]


def link_exists(name: str) -> bool:
    return _run(["ip", "link", "show", "dev", name], check=False).returncode == 0


def qdiscs(dev: str, netns: str | None = None) -> str:
    return _run(in_ns(netns, ["tc", "qdisc", "show", "dev", dev]), check=False).stdout


def destroy_network(namespaces: Sequence[str], links: Sequence[str], bridge: str | None) -> list[str]:
    """Remove what exists of our veths, bridge and namespaces. Returns problems instead of
    raising, so teardown always runs to the end.

    Veths go first: deleting the root-side end removes the pair (and both qdiscs) at once,
    whereas a namespace's devices are destroyed asynchronously after `ip netns del`."""
    problems: list[str] = []
    for name in [*links, *([bridge] if bridge else [])]:
        if link_exists(name):
            result = _run(["ip", "link", "del", name], check=False)
            if result.returncode != 0 and link_exists(name):
                problems.append(f"link {name}: {result.stderr.strip()}")
    existing = set(list_namespaces(""))
    for ns in namespaces:
        if ns in existing:
            result = _run(["ip", "netns", "del", ns], check=False)
            if result.returncode != 0 and ns in list_namespaces(""):
                problems.append(f"namespace {ns}: {result.stderr.strip()}")
    return problems
