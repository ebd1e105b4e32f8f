"""The local cluster harness: ``sonic cluster up --local N`` on this machine (DESIGN.md s. 7).

Modes:

- ``loopback``: N agent processes on 127.0.0.1 (free ports picked by the agents), each with its
  own data directory; the embedded S3 server on 127.0.0.1. No root needed. ``--s3-mbps`` is
  enforced inside the S3 process (there is no link to shape); ``--vm-mbps`` is refused.
- ``ssh``: as loopback, but one throwaway sshd on a high loopback port and every agent is
  started through it by :mod:`sonic.cluster.bootstrap`, the code path used for real VMs.
- ``netns`` (root): one network namespace per VM with its own address, sshd (port 22) and agent
  (port 7370), veth pairs to a bridge in the root namespace, tbf on every VM link and on the S3
  link. The S3 server runs in a namespace of its own rather than on the bridge address: then
  its traffic crosses a veth we can shape (``--s3-mbps`` is an aggregate limit, as S3's
  per-client bandwidth is) without touching any root-namespace interface.

Everything started is recorded in the cluster file's ``local:`` section as it is created, so
``cluster down`` (even from another process, after a crash) stops exactly those processes by
PID and removes exactly those namespaces and links. A failure or Ctrl-C during ``up`` tears
down what was already made.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from sonic.cluster import bootstrap
from sonic.cluster.codebundle import build_bundle, project_root
from sonic.cluster.readiness import (
    AGENT_INFO_FILE,
    AGENT_READY_TIMEOUT_S,
    PROBE_TIMEOUT_S,
    AgentProgram,
    PingFn,
    agent_args,
    make_secret,
    read_secret,
    wait_agent_ready,
)
from sonic.cluster.s3auth import cluster_credentials
from sonic.cluster.spec import (
    DEFAULT_CLUSTER_FILE,
    ClusterSpec,
    LocalClusterInfo,
    RemoteStorageSpec,
    SSHSpec,
    VMSpec,
    parse_cluster,
)
from sonic.emulation import cgroups, netns
from sonic.emulation.procs import (
    DEFAULT_STOP_TIMEOUT_S,
    backoff,
    cwd_under,
    is_ours,
    pid_alive,
    spawn,
    stop_pid,
    stop_session,
    tail,
)
from sonic.emulation.sshd import make_client_keys, require_sshd, start_sshd
from sonic.errors import ClusterFileError, SonicError, TransportError, UserInputError
from sonic.runtime.program import real_agent_program

MODES = ("loopback", "ssh", "netns")
DEFAULT_ROOT = DEFAULT_CLUSTER_FILE.parent
# An m5.large-like shape (the cluster file's own VM default has 2 cores); memory is half its
# 8 GiB so that a few emulated VMs fit on a developer machine.
DEFAULT_CORES_PER_VM = 2
DEFAULT_MEMORY_MB_PER_VM = 4096
DEFAULT_BUCKET = "sonic-scratch"
DEFAULT_REGION = "us-east-1"
# The S3 server starts in about a second; a cold page cache on CI can make it several times that.
S3_READY_TIMEOUT_S = 30.0
# Fixed ports are fine inside namespaces: every VM has its own network stack.
NETNS_SSH_PORT = 22
NETNS_S3_PORT = 9000
LOOPBACK = "127.0.0.1"
# SSH stop of agents on `down` is a courtesy before the PID kill; keep it snappy.
DOWN_SSH_TIMEOUTS = bootstrap.SSHTimeouts(connect_s=3.0, banner_s=5.0, auth_s=5.0, channel_s=10.0)
DOWN_SSH_RETRY = bootstrap.RetryPolicy(attempts=1)


@dataclass(frozen=True)
class HarnessOptions:
    """Knobs beyond the CLI's, mostly for tests and experiments."""

    program: AgentProgram | None = None          # None: the real sonic.runtime.agent
    agent_ready_timeout_s: float = AGENT_READY_TIMEOUT_S
    s3_ready_timeout_s: float = S3_READY_TIMEOUT_S
    s3_fail_rate: float = 0.0
    bucket: str = DEFAULT_BUCKET
    region: str = DEFAULT_REGION
    ssh_max_workers: int = bootstrap.DEFAULT_MAX_WORKERS
    ssh_config_path: Path | None = bootstrap.DEFAULT_SSH_CONFIG
    stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S


def client_env(spec: ClusterSpec) -> dict[str, str]:
    """Environment a client (driver, boto3) needs for this cluster's remote storage: the
    embedded server's key pair for local clusters (derived from the cluster secret, see
    :func:`sonic.cluster.s3auth.cluster_credentials`), nothing for real S3."""
    if spec.local is None:
        return {}
    if not spec.secret_file:
        raise ClusterFileError("local cluster file has no secret_file; bring the cluster up again")
    return cluster_credentials(read_secret(spec.secret_file))


# ----------------------------------------------------------------------------- signals

@contextmanager
def _interruptible() -> Iterator[None]:
    """Within the block, SIGTERM behaves like Ctrl-C (KeyboardInterrupt), so `up` and
    fixtures clean up on both. Only the main thread may install handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _shielded() -> Iterator[None]:
    """Teardown must run to the end: a second Ctrl-C must not leave namespaces behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# ----------------------------------------------------------------------------- helpers

def _marker(local: LocalClusterInfo) -> str:
    # Every process we start carries the cluster's directory on its command line
    # (data dir, sshd config, S3 ready file): a PID not showing it is not ours any more.
    return local.root


def _child_env(credentials: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    # The agents and the S3 server run the very code of this harness, from any cwd.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(project_root()), env.get("PYTHONPATH", "")) if p)
    env.update(credentials)
    return env


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except ValueError:
        return None  # written atomically by its owner; a foreign half-file means "not yet"


def load_cluster_file(cluster_file: Path) -> ClusterSpec | None:
    """Load a cluster file, or None if there is none. Key files are not required to exist:
    a stale local cluster's directory may already be gone, and `down` must still work."""
    try:
        doc = yaml.safe_load(cluster_file.read_text())
    except FileNotFoundError:
        return None
    except (yaml.YAMLError, UnicodeDecodeError):
        raise ClusterFileError(f"cluster file {cluster_file} is not valid YAML; fix or remove it") from None
    except OSError as exc:
        raise ClusterFileError(f"cluster file {cluster_file} cannot be read ({exc.strerror}); pass --cluster PATH") from None
    return parse_cluster(doc, source=str(cluster_file), check_paths=False)


def is_live(spec: ClusterSpec) -> bool:
    """Does anything this local cluster started still run (or exist)?"""
    local = spec.local
    if local is None:
        return False
    if any(is_ours(pid, _marker(local)) for pid in local.pids.values()):
        return True
    if local.namespaces and os.geteuid() == 0:
        existing = set(netns.list_namespaces(netns.NS_PREFIX))
        return any(ns in existing for ns in local.namespaces)
    return False


# ----------------------------------------------------------------------------- up

class _Starter:
    """Builds one local cluster step by step, recording every resource before using it."""

    def __init__(
        self, n: int, mode: str, root: Path, cluster_file: Path, vm_mbps: float | None, s3_mbps: float | None,
        s3_latency_ms: float | None, cores: int, memory_mb: int, options: HarnessOptions,
        limits: cgroups.VMLimits = cgroups.VMLimits(),
    ) -> None:
        self.n, self.mode, self.options = n, mode, options
        self.limits = limits
        self.root = root
        self.cluster_file = cluster_file
        self.program = options.program or real_agent_program()
        self._lock = threading.Lock()
        cid = secrets.token_hex(3)
        self.cdir = (root / f"cluster-{cid}").resolve()
        self.spec = ClusterSpec(
            vms=[
                VMSpec(name=f"vm{i}", host=LOOPBACK, cores=cores, memory_mb=memory_mb,
                       data_dir=str(self.cdir / "vms" / f"vm{i}"))
                for i in range(n)
            ],
            remote_storage=RemoteStorageSpec(bucket=options.bucket, region=options.region),
            secret_file=str(self.cdir / "secret"),
            local=LocalClusterInfo(
                mode=mode, root=str(self.cdir), vm_mbps=vm_mbps, s3_mbps=s3_mbps, s3_latency_ms=s3_latency_ms,
                cluster_id=cid, state="starting", cluster_file=str(cluster_file.resolve()),
                vm_cpus=limits.cpus, vm_memory_mb=limits.memory_mb,
            ),
        )
        self.plan: netns.NetPlan | None = None

    @property
    def local(self) -> LocalClusterInfo:
        assert self.spec.local is not None
        return self.spec.local

    def save(self) -> None:
        with self._lock:
            self.spec.save(self.cluster_file)

    def record_pid(self, key: str, pid: int) -> None:
        with self._lock:
            self.local.pids[key] = pid
            self.spec.save(self.cluster_file)

    def run(self) -> ClusterSpec:
        self.cdir.mkdir(parents=True, exist_ok=False)
        self.save()  # first thing on disk: from here on, `down` can clean up whatever follows
        self.secret = make_secret(Path(self.spec.secret_file or ""))
        if self.mode == "netns":
            self._network()
        self._s3()
        if self.mode == "loopback":
            self._loopback_agents()
        elif self.mode == "ssh":
            self._ssh_agents()
        else:
            self._netns_agents()
        self.local.state = "up"
        self.save()
        return self.spec

    # -- network ------------------------------------------------------------------

    def _network(self) -> None:
        with netns.subnet_lock():
            plan = netns.NetPlan(self.local.cluster_id, netns.pick_octet(), self.n)
            # Record names before creating them, so a failure half-way is cleaned up.
            self.local.namespaces = plan.namespaces
            self.local.links = plan.host_veths
            self.local.bridge = plan.bridge
            self.local.subnet = plan.subnet
            self.save()
            netns.create_network(plan, self.local.vm_mbps, self.local.s3_mbps)
        # The safety gate: every address we will talk to must route via our own bridge.
        for addr in [plan.s3_ip, *(plan.vm_ip(i) for i in range(self.n))]:
            netns.check_route(addr, plan.bridge)
        for i, vm in enumerate(self.spec.vms):
            vm.host = plan.vm_ip(i)
            vm.netns = plan.vm_ns(i)
        self.plan = plan
        self.save()

    # -- S3 -----------------------------------------------------------------------

    def _s3(self) -> None:
        sdir = self.cdir / "s3"
        sdir.mkdir()
        ready = sdir / "ready.json"
        host, port = (self.plan.s3_ip, NETNS_S3_PORT) if self.plan else (LOOPBACK, 0)
        argv = [sys.executable, "-m", "sonic.emulation.s3server", "--host", host, "--port", str(port),
                "--bucket", self.options.bucket, "--region", self.options.region, "--ready-file", str(ready),
                "--data-dir", str(sdir / "objects")]   # objects on disk in the cluster dir, gone on `down`
        if self.local.s3_latency_ms:
            argv += ["--latency-ms", f"{self.local.s3_latency_ms:g}"]
        if self.options.s3_fail_rate:
            argv += ["--fail-rate", f"{self.options.s3_fail_rate:g}"]
        if self.local.s3_mbps and not self.plan:
            argv += ["--mbps", f"{self.local.s3_mbps:g}"]   # no link to shape: shape in-process
        if self.plan:
            argv = netns.in_ns(self.plan.s3_ns, argv)
        log = sdir / "s3.log"
        process = spawn(argv, log=log, env=_child_env(cluster_credentials(self.secret)), cwd=sdir)
        self.record_pid("s3", process.pid)
        deadline = time.monotonic() + self.options.s3_ready_timeout_s
        for _ in backoff(deadline):
            if process.poll() is not None:
                raise TransportError(f"embedded S3 server for {host}:{port} exited at start; log {log}: {tail(log)}")
            doc = _read_json(ready)
            if doc is not None:
                self.spec.remote_storage.endpoint_url = str(doc["endpoint_url"])
                self.save()
                return
        raise TransportError(
            f"embedded S3 server at {host}:{port} was not ready within {self.options.s3_ready_timeout_s:g}s; "
            f"log {log}: {tail(log)}"
        )

    # -- agents -------------------------------------------------------------------

    def _s3_args(self) -> dict[str, str | None]:
        rs = self.spec.remote_storage
        return {"s3_endpoint": rs.endpoint_url, "s3_bucket": rs.bucket, "s3_region": rs.region}

    def _loopback_agents(self) -> None:
        started = []
        for vm in self.spec.vms:
            data = Path(vm.data_dir)
            data.mkdir(parents=True)
            argv = [*self.program.argv_prefix, *agent_args(
                vm.name, LOOPBACK, 0, str(data), str(self.spec.secret_file), vm.cores, vm.memory_mb, **self._s3_args()
            )]
            process = spawn(argv, log=data / "agent.stdout", env=_child_env(cluster_credentials(self.secret)),
                            cwd=data)
            self.record_pid(f"agent-{vm.name}", process.pid)
            started.append((vm, data, process))
        # All agents boot in parallel; then wait for each under its own deadline.
        for vm, data, process in started:
            info = wait_agent_ready(
                vm.name, LOOPBACK, partial(_read_json, data / AGENT_INFO_FILE), self.secret,
                timeout_s=self.options.agent_ready_timeout_s,
                ping=self.program.ping,
                alive=partial(_running, process),
                diagnostics=partial(_local_diagnostics, data),
            )
            vm.agent_port = int(info["port"])
            if int(info.get("pid", process.pid)) != process.pid:
                self.record_pid(f"agent-{vm.name}", int(info["pid"]))
        self.save()

    def _bootstrap(self, launch: bootstrap.AgentLaunch) -> None:
        infos = bootstrap.deploy_all(
            self.spec.vms, launch,
            max_workers=self.options.ssh_max_workers,
            ssh_config_path=self.options.ssh_config_path,
            on_launched=lambda name, pid: self.record_pid(f"agent-{name}", pid),
        )
        for vm in self.spec.vms:
            info = infos[vm.name]
            vm.agent_port = int(info["port"])
            self.local.pids[f"agent-{vm.name}"] = int(info["pid"])
        self.save()

    def _launch(self, bind: str | None, port: int | None) -> bootstrap.AgentLaunch:
        bundle = build_bundle(self.root / "code-cache")
        rs = self.spec.remote_storage
        return bootstrap.AgentLaunch(
            program=self.program, secret=self.secret, bundle=bundle, bind=bind, port=port,
            env=cluster_credentials(self.secret), ready_timeout_s=self.options.agent_ready_timeout_s,
            s3_endpoint=rs.endpoint_url, s3_bucket=rs.bucket, s3_region=rs.region,
        )

    def _ssh_agents(self) -> None:
        keys = make_client_keys(self.cdir / "ssh")
        server = start_sshd(self.cdir / "sshd", keys, LOOPBACK)
        self.record_pid("sshd", server.pid)
        for vm in self.spec.vms:
            vm.ssh = SSHSpec(user=server.user, key=str(keys.key), port=server.port, known_hosts=str(keys.known_hosts))
        self.save()
        self._bootstrap(self._launch(bind=LOOPBACK, port=0))

    def _netns_agents(self) -> None:
        assert self.plan is not None
        keys = make_client_keys(self.cdir / "ssh")
        for i, vm in enumerate(self.spec.vms):
            group = self._vm_group(vm.name)
            server = start_sshd(self.cdir / f"sshd-{vm.name}", keys, vm.host, NETNS_SSH_PORT, netns=self.plan.vm_ns(i))
            self.record_pid(f"sshd-{vm.name}", server.pid)
            if group:
                # Before any agent starts: the agent and its workers are born in the VM's group.
                cgroups.add(group, server.pid)
            vm.ssh = SSHSpec(user=server.user, key=str(keys.key), port=NETNS_SSH_PORT, known_hosts=str(keys.known_hosts))
        self.save()
        self._bootstrap(self._launch(bind=None, port=None))

    def _vm_group(self, vm: str) -> list[str]:
        """The VM's cgroup with its CPU/memory limits (none asked: none made); recorded first."""
        if not self.limits.any:
            return []
        group = cgroups.planned_dirs(self.local.cluster_id, vm)
        with self._lock:
            self.local.cgroups[vm] = group
        self.save()
        cgroups.create(group, self.limits)
        return group


def _running(process: subprocess.Popen[bytes]) -> bool:
    return process.poll() is None


def _local_diagnostics(data: Path) -> str:
    text = " | ".join(
        line for log in ("agent.stdout", "agent.log") for line in tail(data / log, 1500).splitlines()[-8:] if line.strip()
    )
    return f"agent output in {data}: {text}" if text else f"no agent output in {data}"


def _validate(
    n: int, mode: str, vm_mbps: float | None, s3_mbps: float | None, s3_latency_ms: float | None,
    cores: int, memory_mb: int,
) -> None:
    if mode not in MODES:
        raise UserInputError(f"unknown cluster mode {mode!r}; use one of {', '.join(MODES)}")
    if not isinstance(n, int) or n < 1:
        raise UserInputError(f"--local needs a positive number of VMs, got {n!r}")
    if mode == "netns" and n > netns.MAX_VMS:
        raise UserInputError(f"--mode netns supports at most {netns.MAX_VMS} VMs, got {n}")
    for flag, value in (("--vm-mbps", vm_mbps), ("--s3-mbps", s3_mbps)):
        if value is not None and value <= 0:
            raise UserInputError(f"{flag} must be a positive rate in Mbit/s, got {value}")
    if s3_latency_ms is not None and s3_latency_ms < 0:
        raise UserInputError(f"--s3-latency-ms must not be negative, got {s3_latency_ms}")
    if vm_mbps is not None and mode != "netns":
        raise UserInputError(f"--vm-mbps needs --mode netns: {mode} mode has no VM links to rate-limit")
    if cores < 1 or memory_mb < 1:
        raise UserInputError("cores and memory per VM must be positive")
    if mode == "netns":
        reason = netns.netns_unusable_reason()
        if reason:
            raise UserInputError(reason)
    if mode in ("ssh", "netns"):
        require_sshd()


def _refuse_live(cluster_file: Path, options: HarnessOptions) -> None:
    """A live cluster is never overwritten; a stale one (all its processes gone) is cleaned."""
    old = load_cluster_file(cluster_file)
    if old is None:
        return
    if old.local is None:
        raise ClusterFileError(
            f"{cluster_file} describes a cluster of real VMs; pass --cluster OTHER.yaml for a local cluster or move it away"
        )
    if is_live(old):
        alive = sorted(k for k, pid in old.local.pids.items() if pid_alive(pid))
        raise ClusterFileError(
            f"a local cluster is already running from {cluster_file} ({', '.join(alive) or 'namespaces'}); "
            "run `sonic cluster down` first"
        )
    cluster_down(old, cluster_file, options=options)


def cluster_up(
    n: int,
    mode: str = "loopback",
    root: Path = DEFAULT_ROOT,
    vm_mbps: float | None = None,
    s3_mbps: float | None = None,
    s3_latency_ms: float | None = None,
    cores_per_vm: int = DEFAULT_CORES_PER_VM,
    memory_mb_per_vm: int = DEFAULT_MEMORY_MB_PER_VM,
    *,
    cluster_file: Path | None = None,
    options: HarnessOptions = HarnessOptions(),
    limits: cgroups.VMLimits = cgroups.VMLimits(),
) -> ClusterSpec:
    """Start a local cluster of ``n`` emulated VMs and write its cluster file
    (``root/cluster.yaml`` unless ``cluster_file`` is given). On any failure or interrupt,
    everything already started is torn down before the error propagates."""
    _validate(n, mode, vm_mbps, s3_mbps, s3_latency_ms, cores_per_vm, memory_mb_per_vm)
    cgroups.check_limits(limits, mode)
    if limits.memory_mb is not None:
        memory_mb_per_vm = limits.memory_mb      # what the scheduler may use is what the VM has
    root = Path(root).resolve()
    cluster_file = Path(cluster_file) if cluster_file is not None else root / DEFAULT_CLUSTER_FILE.name
    _refuse_live(cluster_file, options)
    starter = _Starter(n, mode, root, cluster_file, vm_mbps, s3_mbps, s3_latency_ms, cores_per_vm,
                       memory_mb_per_vm, options, limits)
    with _interruptible():
        try:
            return starter.run()
        except BaseException as exc:
            try:
                cluster_down(starter.spec, cluster_file, options=options)
            except SonicError as cleanup:
                exc.add_note(f"cleanup after the failed start was incomplete: {cleanup}")
            raise


# ----------------------------------------------------------------------------- down

def _stop_agents_over_ssh(spec: ClusterSpec, options: HarnessOptions) -> None:
    """The real-VM way first (kill by agent.json PID over SSH, remove secret and data);
    whatever it misses is killed by PID afterwards, so failures here are not fatal."""
    local = spec.local
    assert local is not None
    sshd_up = [k for k, pid in local.pids.items() if k.startswith("sshd") and is_ours(pid, _marker(local))]
    if not sshd_up:
        return
    vms = [vm for vm in spec.vms if vm.ssh is not None]
    if local.mode == "netns" and local.bridge:
        safe = []
        for vm in vms:
            try:
                netns.check_route(vm.host, local.bridge)
                safe.append(vm)
            except netns.RouteCheckError:
                continue  # never send to an address that does not route via our bridge
        vms = safe
    if not vms:
        return
    try:
        bootstrap.stop_all(
            vms, max_workers=options.ssh_max_workers, ssh_config_path=options.ssh_config_path,
            timeouts=DOWN_SSH_TIMEOUTS, retry=DOWN_SSH_RETRY,
        )
    except TransportError as exc:
        # Expected when the cluster is half-started or sshd is gone; the PID pass follows.
        print(f"sonic: stopping agents over ssh failed, stopping them by PID: {exc}", file=sys.stderr)


def cluster_down(spec: ClusterSpec, cluster_file: Path | None = None, *, options: HarnessOptions = HarnessOptions()) -> None:
    """Stop everything a local cluster started and delete its files. Idempotent; problems are
    collected and reported at the end, after every step was attempted."""
    local = spec.local
    if local is None:
        raise ClusterFileError("this cluster file describes real VMs, not a local cluster; use `sonic cluster down`")
    problems: list[str] = []
    marker = _marker(local)
    with _shielded():
        if local.mode in ("ssh", "netns") and local.state == "up":
            # A half-started cluster is stopped by PID alone: quicker, and its SSH side may be
            # what failed.
            _stop_agents_over_ssh(spec, options)
        order = sorted(local.pids.items(), key=lambda kv: (not kv[0].startswith("agent"), kv[0].startswith("s3")))
        for key, pid in order:
            stopped = stop_pid(pid, marker, options.stop_timeout_s)
            if key.startswith("agent"):
                # Workers orphaned by a killed agent (killed now, or earlier: a crash, a fault
                # test). Once the agent is gone its session id can no longer be verified, so
                # only members running in this cluster's directory are touched.
                stop_session(pid, options.stop_timeout_s, owned=None if stopped else partial(cwd_under, root=marker))
            if is_ours(pid, marker):
                problems.append(f"{key} (pid {pid}) still runs")
        if local.namespaces:
            if os.geteuid() != 0:
                problems.append(f"namespaces {', '.join(local.namespaces)} need root to remove")
            else:
                existing = set(netns.list_namespaces(netns.NS_PREFIX))
                for ns in local.namespaces:
                    if ns not in existing:
                        continue
                    # Everything inside our own namespace was started by us.
                    for pid in netns.namespace_pids(ns):
                        if pid != os.getpid() and pid_alive(pid):
                            _kill_in_namespace(pid, options.stop_timeout_s)
                problems += netns.destroy_network(local.namespaces, local.links, local.bridge)
        elif local.bridge:
            problems += netns.destroy_network([], local.links, local.bridge)
        for vm, group in local.cgroups.items():
            problems += cgroups.remove(group) if os.geteuid() == 0 else [f"cgroup of {vm} needs root to remove"]
        cdir = Path(local.root)
        if local.root and cdir.name.startswith("cluster-") and cdir.is_dir():
            shutil.rmtree(cdir, ignore_errors=False, onerror=lambda fn, path, info: problems.append(f"{path}: {info[1]}"))
        target = cluster_file or (Path(local.cluster_file) if local.cluster_file else None)
        if target is not None:
            _remove_if_same_cluster(target, local.cluster_id)
    if problems:
        raise SonicError(f"cluster down left things behind: {'; '.join(problems)}; remove them by hand")


def _kill_in_namespace(pid: int, timeout_s: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in backoff(time.monotonic() + timeout_s):
        if not pid_alive(pid):
            return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return


def _remove_if_same_cluster(cluster_file: Path, cluster_id: str) -> None:
    """Remove the cluster file only if it still describes this cluster (never a newer one)."""
    try:
        current = load_cluster_file(cluster_file)
    except ClusterFileError:
        return
    if current is not None and current.local is not None and current.local.cluster_id == cluster_id:
        cluster_file.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- status

def cluster_status(
    spec: ClusterSpec, *, ping: PingFn | None = None, timeout_s: float = PROBE_TIMEOUT_S
) -> list[dict[str, Any]]:
    """One entry per VM: name, host, port, state ("up" / "down" / "unreachable"), plus pid for
    local clusters, version when up and error when unreachable."""
    ping = ping or real_agent_program().ping
    local = spec.local
    try:
        secret: bytes | None = read_secret(spec.secret_file) if spec.secret_file else None
    except ClusterFileError:
        secret = None
    rows: list[dict[str, Any]] = []
    for vm in spec.vms:
        row: dict[str, Any] = {"name": vm.name, "host": vm.host, "port": vm.agent_port}
        if local is not None:
            pid = local.pids.get(f"agent-{vm.name}")
            row["pid"] = pid
            if pid is None or not is_ours(pid, _marker(local)):
                rows.append({**row, "state": "down"})
                continue
            if local.mode == "netns" and local.bridge:
                try:
                    netns.check_route(vm.host, local.bridge)
                except netns.RouteCheckError as exc:
                    rows.append({**row, "state": "unreachable", "error": str(exc)})
                    continue
        if secret is None:
            rows.append({**row, "state": "unreachable", "error": "no readable cluster secret; run `sonic cluster up` again"})
            continue
        try:
            answer = ping(vm.host, vm.agent_port, secret, vm.name, timeout_s)
            rows.append({**row, "state": "up", "version": answer.get("version")})
        except TransportError as exc:
            rows.append({**row, "state": "unreachable", "error": str(exc)})
    return rows


# ----------------------------------------------------------------------------- fixture

@contextmanager
def local_cluster(
    n: int,
    mode: str = "loopback",
    root: Path = DEFAULT_ROOT,
    **kwargs: Any,
) -> Iterator[ClusterSpec]:
    """``with local_cluster(3, "netns", root=tmp_path) as spec: ...``: always torn down,
    also when the body raises, on Ctrl-C and on SIGTERM."""
    options: HarnessOptions = kwargs.get("options", HarnessOptions())
    cluster_file: Path | None = kwargs.get("cluster_file")
    with _interruptible():
        spec = cluster_up(n, mode, root, **kwargs)
        try:
            yield spec
        finally:
            cluster_down(spec, cluster_file, options=options)


__all__ = [
    "MODES", "HarnessOptions", "client_env", "cluster_down", "cluster_status", "cluster_up", "is_live", "load_cluster_file",
    "local_cluster",
]
