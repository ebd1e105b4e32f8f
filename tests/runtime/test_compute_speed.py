"""Calibration's compute factor: a fixed CPU workload here and on every VM's warm worker
(loopback VMs compute on this machine's own cores: factors near 1; the quota case, where the
factor must reach ~4, is in tests/cluster/test_cluster_vm_limits.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sonic.cluster.spec import ClusterFileError, parse_cluster
from sonic.emulation.local import local_cluster
from sonic.runtime.compute_speed import compute_factors, local_rounds_and_seconds
from sonic.runtime.protocol import read_secret


def test_the_local_workload_lasts_long_enough_for_a_quota_to_bind() -> None:
    rounds, seconds = local_rounds_and_seconds(min_seconds=0.2)
    assert rounds >= 64 and seconds > 0.05  # fastest of three runs of a >= 0.2 s workload


def test_loopback_vms_compute_about_as_fast_as_this_machine(tmp_path: Path) -> None:
    with local_cluster(2, "loopback", tmp_path) as spec:
        factors = compute_factors(spec, read_secret(spec.secret_file))
    assert set(factors) == {"vm0", "vm1"}
    # Same cores; on a shared 2-core machine another job can slow one side for a while.
    assert all(0.4 < f < 2.5 for f in factors.values()), factors


@pytest.mark.parametrize(("factors", "expected"), [
    ({"vm9": 2.0}, "no VM is named 'vm9'"),
    ({"vm0": 0.0}, "between 0.01 and 100"),
    ({"vm0": float("nan")}, "between 0.01 and 100"),
    ({"vm0": 1e6}, "between 0.01 and 100"),
])
def test_a_bad_compute_factor_in_the_cluster_file_is_one_line(factors: dict[str, float], expected: str) -> None:
    doc = {"vms": [{"name": "vm0", "host": "127.0.0.1"}], "calibration": {"compute_factor": factors}}
    with pytest.raises(ClusterFileError, match=expected):
        parse_cluster(doc)

