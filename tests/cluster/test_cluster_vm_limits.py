"""``--vm-cpus``/``--vm-memory-mb``: every netns VM's agent and workers in a cgroup of its own,
removed on `down` (root, netns, sshd, cgroups)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from sonic.cluster.spec import load_cluster
from sonic.emulation import cgroups
from sonic.emulation.cgroups import VMLimits
from sonic.emulation.local import HarnessOptions, local_cluster
from sonic.runtime.compute_speed import compute_factors
from sonic.runtime.protocol import read_secret


def _cgroups_unusable() -> str | None:
    return cgroups.unusable_reason()


@pytest.mark.root
@pytest.mark.usefixtures("require_netns", "require_sshd")
@pytest.mark.skipif(_cgroups_unusable() is not None, reason=f"cgroups: {_cgroups_unusable()}")
def test_netns_vms_run_in_limited_groups(tmp_path: Path) -> None:
    limits = VMLimits(cpus=0.25, memory_mb=768)
    with local_cluster(2, "netns", tmp_path, options=HarnessOptions(ssh_config_path=None), limits=limits) as spec:
        local = spec.local
        assert local is not None and set(local.cgroups) == {"vm0", "vm1"}
        on_disk = load_cluster(tmp_path / "cluster.yaml")
        assert on_disk.local is not None and on_disk.local.vm_cpus == 0.25 and on_disk.local.vm_memory_mb == 768
        groups = {vm: list(dirs) for vm, dirs in local.cgroups.items()}
        for vm in spec.vms:
            assert vm.memory_mb == 768                       # the scheduler sees the VM's real memory
            members = cgroups.members(groups[vm.name])
            assert local.pids[f"agent-{vm.name}"] in members, (vm.name, members)
            assert local.pids[f"sshd-{vm.name}"] in members
            for d in map(Path, groups[vm.name]):
                if (d / "cpu.max").exists():
                    assert (d / "cpu.max").read_text().split() == ["25000", "100000"]
                    assert int((d / "memory.max").read_text()) == 768 * 2**20
                if (d / "cpu.cfs_quota_us").exists():
                    assert int((d / "cpu.cfs_quota_us").read_text()) == 25000
                if (d / "memory.limit_in_bytes").exists():
                    assert int((d / "memory.limit_in_bytes").read_text()) == 768 * 2**20
        # VMs do not share a group.
        assert not cgroups.members(groups["vm0"]) & cgroups.members(groups["vm1"])
        # A quarter core computes a fixed workload about 4x slower than this machine does, and
        # calibration says so for every VM (the cost model then scales stage times by it).
        factors = compute_factors(spec, read_secret(spec.secret_file))
        assert set(factors) == {"vm0", "vm1"}
        assert all(2.5 < f < 8 for f in factors.values()), factors
    for dirs in groups.values():
        assert not any(os.path.exists(d) for d in dirs), "cgroup left after down"


def test_limits_outside_netns_are_refused(sonic_cli: Callable[..., subprocess.CompletedProcess[str]],
                                          tmp_path: Path) -> None:
    proc = sonic_cli("cluster", "up", "--local", "2", "--vm-cpus", "0.5", "--cluster", tmp_path / "c.yaml")
    assert proc.returncode == 2, proc.stderr
    assert "--mode netns" in proc.stderr and "internal error" not in proc.stderr
    assert not (tmp_path / "c.yaml").exists()
    proc = sonic_cli("cluster", "up", "--vm-memory-mb", "512", "--cluster", tmp_path / "c.yaml")
    assert proc.returncode == 2 and "--vm-memory-mb applies to local clusters only" in proc.stderr, proc.stderr
