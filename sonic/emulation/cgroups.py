"""CPU and memory limits of emulated VMs (netns mode, root): one control group per VM.

A VM's sshd is placed in its group before any agent starts, so the agent it launches and every
worker the agent forks inherit the group: the whole VM is held to ``cpus`` cores (CFS
bandwidth: ``cpus`` x 100 ms of CPU per 100 ms period) and ``memory_mb`` of memory, as a real
VM of that size would be. Eight such VMs at 0.25 cores each share 2 host cores without
oversubscribing each other, and a VM that runs more instances than its share queues.

Two kernel interfaces, chosen by what this machine mounts:

- cgroup v2 (``/sys/fs/cgroup/cgroup.controllers`` lists ``cpu`` and ``memory``): one
  directory per VM under ``sonic-<cluster id>``, ``cpu.max`` and ``memory.max``;
- cgroup v1 (per-controller hierarchies ``/sys/fs/cgroup/cpu`` and ``.../memory``): one directory
  per VM in each, ``cpu.cfs_quota_us``/``cpu.cfs_period_us`` and ``memory.limit_in_bytes``.

Groups are created under the cgroup this process is already in (never above it), so a harness
running inside a container's or a session's group stays inside it. Every directory is recorded
in the cluster file before it is created, so ``down`` (or a failed ``up``) removes exactly those:
it kills what still runs in a group (only our own VM processes can be there) and removes it.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from sonic.emulation.procs import backoff
from sonic.errors import UserInputError

CGROUP_ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000
# Writes to cgroup files fail with EBUSY/EINVAL for transient reasons rarely; removal waits
# for killed members to be reaped by the kernel, which takes milliseconds.
REMOVE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class VMLimits:
    cpus: float | None = None          # cores, fractional allowed (0.25 = a quarter core)
    memory_mb: int | None = None

    @property
    def any(self) -> bool:
        return self.cpus is not None or self.memory_mb is not None


def _own_path(controller: str) -> str:
    """This process's group in a v1 ``controller`` hierarchy ("" for v2's unified line)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if controller in names.split(","):
            return path
    raise FileNotFoundError(f"no {controller} cgroup in /proc/self/cgroup")


def _v2_base() -> Path | None:
    """The v2 group to create VM groups under, if v2 has the cpu and memory controllers."""
    controllers = CGROUP_ROOT / "cgroup.controllers"
    if not controllers.exists():
        return None
    if not {"cpu", "memory"} <= set(controllers.read_text().split()):
        return None
    own = ""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            own = line[3:]
    return CGROUP_ROOT / own.lstrip("/")


def _v1_bases() -> tuple[Path, Path] | None:
    cpu, memory = CGROUP_ROOT / "cpu", CGROUP_ROOT / "memory"
    if not ((cpu / "cgroup.procs").exists() and (memory / "cgroup.procs").exists()):
        return None
    return cpu / _own_path("cpu").lstrip("/"), memory / _own_path("memory").lstrip("/")


def unusable_reason() -> str | None:
    """Why VM limits cannot be applied here, or None if they can."""
    if os.geteuid() != 0:
        return "--vm-cpus/--vm-memory-mb need root (cgroups); run as root or drop them"
    if _v2_base() is None and _v1_bases() is None:
        return ("--vm-cpus/--vm-memory-mb need cgroup v2 with the cpu and memory controllers, or cgroup v1 "
                "cpu and memory hierarchies, under /sys/fs/cgroup; this machine has neither")
    return None


def check_limits(limits: VMLimits, mode: str) -> None:
    """Bad-input checks for ``sonic cluster up``: one clear line, exit 2."""
    if not limits.any:
        return
    if mode != "netns":
        raise UserInputError(f"--vm-cpus/--vm-memory-mb need --mode netns: {mode} mode has no per-VM group to limit")
    if limits.cpus is not None and not 0.01 <= limits.cpus <= (os.cpu_count() or 1):
        raise UserInputError(f"--vm-cpus must be between 0.01 and this machine's {os.cpu_count()} cores, "
                             f"got {limits.cpus:g}")
    if limits.memory_mb is not None and limits.memory_mb < 64:
        raise UserInputError(f"--vm-memory-mb must be at least 64 (an agent and a worker need that), got {limits.memory_mb}")
    reason = unusable_reason()
    if reason:
        raise UserInputError(reason)


def planned_dirs(cluster_id: str, vm: str) -> list[str]:
    """Directories of ``vm``'s group, to record before :func:`create`."""
    name = f"sonic-{cluster_id}-{vm}"
    v2 = _v2_base()
    if v2 is not None:
        return [str(v2 / name)]
    bases = _v1_bases()
    if bases is None:
        raise UserInputError(unusable_reason() or "no usable cgroup hierarchy")
    return [str(base / name) for base in bases]


def _write(path: Path, value: str) -> None:
    path.write_text(value)


def create(dirs: list[str], limits: VMLimits) -> None:
    """Make the group(s) in ``dirs`` (from :func:`planned_dirs`) and set the limits."""
    for d in map(Path, dirs):
        if (d.parent / "cgroup.subtree_control").exists():
            # v2: the parent must hand the controllers down before a child can use them.
            _write(d.parent / "cgroup.subtree_control", "+cpu +memory")
        d.mkdir()
        if (d / "cpu.max").exists():
            if limits.cpus is not None:
                _write(d / "cpu.max", f"{int(limits.cpus * PERIOD_US)} {PERIOD_US}")
            if limits.memory_mb is not None:
                _write(d / "memory.max", str(limits.memory_mb * 1024 * 1024))
                if (d / "memory.swap.max").exists():
                    _write(d / "memory.swap.max", "0")     # a VM without swap, as on EC2
        if (d / "cpu.cfs_quota_us").exists() and limits.cpus is not None:
            _write(d / "cpu.cfs_period_us", str(PERIOD_US))
            _write(d / "cpu.cfs_quota_us", str(int(limits.cpus * PERIOD_US)))
        if (d / "memory.limit_in_bytes").exists() and limits.memory_mb is not None:
            _write(d / "memory.limit_in_bytes", str(limits.memory_mb * 1024 * 1024))


def add(dirs: list[str], pid: int) -> None:
    """Move ``pid`` into the group; its future children are born there."""
    for d in dirs:
        _write(Path(d) / "cgroup.procs", str(pid))


def members(dirs: list[str]) -> set[int]:
    found: set[int] = set()
    for d in dirs:
        procs = Path(d) / "cgroup.procs"
        if procs.exists():
            found |= {int(p) for p in procs.read_text().split()}
    return found


def remove(dirs: list[str]) -> list[str]:
    """Kill what still runs in the group (only this VM's processes can) and remove it.
    Returns problems, for ``down`` to report; removing what is already gone is fine."""
    problems: list[str] = []
    for pid in members(dirs):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    for d in map(Path, dirs):
        last: OSError | None = None
        for _ in backoff(time.monotonic() + REMOVE_TIMEOUT_S):
            if not d.exists():
                last = None
                break
            try:
                d.rmdir()
                last = None
                break
            except OSError as exc:
                last = exc        # EBUSY while killed members are still being torn down
        if last is not None:
            problems.append(f"cgroup {d}: {last.strerror}")
    return problems


def usage(dirs: list[str]) -> dict[str, float]:
    """CPU seconds used and memory high-water mark (MB) of the group so far."""
    out: dict[str, float] = {}
    for d in map(Path, dirs):
        if (d / "cpu.stat").exists() and "usage_usec" in (d / "cpu.stat").read_text():
            stat = dict(line.split() for line in (d / "cpu.stat").read_text().splitlines())
            out["cpu_s"] = int(stat["usage_usec"]) / 1e6
        if (d / "memory.peak").exists():
            out["memory_peak_mb"] = int((d / "memory.peak").read_text()) / 2**20
        if (d / "memory.max_usage_in_bytes").exists():
            out["memory_peak_mb"] = int((d / "memory.max_usage_in_bytes").read_text()) / 2**20
        if (d / "cpu.stat").exists() and "nr_throttled" in (d / "cpu.stat").read_text():
            stat = dict(line.split() for line in (d / "cpu.stat").read_text().splitlines())
            out["throttled_periods"] = float(stat["nr_throttled"])
    return out
