"""Per-VM cgroups (sonic.emulation.cgroups) on this machine's real cgroup hierarchy (root only)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from sonic.emulation import cgroups
from sonic.emulation.cgroups import VMLimits
from sonic.errors import UserInputError

pytestmark = pytest.mark.skipif(cgroups.unusable_reason() is not None,
                                reason=f"cgroups unusable here: {cgroups.unusable_reason()}")

BUSY = "import time\nend = time.monotonic() + 30\nwhile time.monotonic() < end: pass\n"
HOG = ("import sys, time\nblocks = [bytearray(32 << 20) for _ in range(12)]\n"
       "for b in blocks: b[::4096] = b'x' * len(b[::4096])\ntime.sleep(30)\n")


@pytest.fixture
def group(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    limits: VMLimits = request.param
    dirs = cgroups.planned_dirs(secrets.token_hex(3), "vmtest")
    try:
        cgroups.create(dirs, limits)
        yield dirs
    finally:
        assert cgroups.remove(dirs) == []
        assert not any(os.path.exists(d) for d in dirs)


def _cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("group", [VMLimits(cpus=0.2)], indirect=True)
def test_cpu_share_is_enforced(group: list[str]) -> None:
    child = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        cgroups.add(group, child.pid)
        assert child.pid in cgroups.members(group)
        start_cpu, start = _cpu_seconds(child.pid), time.monotonic()
        with pytest.raises(subprocess.TimeoutExpired):          # it keeps spinning for 2 s
            child.wait(timeout=2.0)
        used = (_cpu_seconds(child.pid) - start_cpu) / (time.monotonic() - start)
        assert used < 0.3, f"a 0.2-core group used {used:.2f} cores"
        assert cgroups.usage(group).get("throttled_periods", 1) > 0
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize("group", [VMLimits(memory_mb=128)], indirect=True)
def test_memory_limit_is_enforced(group: list[str]) -> None:
    # The child joins the group before it allocates: started stopped-at-exec is not portable,
    # so it waits for a line on stdin first.
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.readline()\n" + HOG],
                             stdin=subprocess.PIPE)
    try:
        cgroups.add(group, child.pid)
        assert child.stdin is not None
        child.stdin.write(b"go\n")
        child.stdin.close()
        assert child.wait(timeout=60) == -9                      # the OOM killer's SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_bad_limits_are_user_errors() -> None:
    with pytest.raises(UserInputError, match="--mode netns"):
        cgroups.check_limits(VMLimits(cpus=0.5), "loopback")
    with pytest.raises(UserInputError, match="--vm-cpus"):
        cgroups.check_limits(VMLimits(cpus=0.001), "netns")
    with pytest.raises(UserInputError, match="--vm-memory-mb"):
        cgroups.check_limits(VMLimits(memory_mb=8), "netns")
    cgroups.check_limits(VMLimits(), "loopback")                 # no limits asked: nothing to check
