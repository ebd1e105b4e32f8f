"""Fixtures for the runtime tests: real agents on real local clusters, one per mode."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from sonic.app import load_app
from sonic.cluster.spec import ClusterSpec
from sonic.emulation.local import HarnessOptions, local_cluster
from sonic.inputs import generate_input
from sonic.runtime.coordinator import Coordinator
from sonic.runtime.protocol import read_secret

# Small inputs: every workload still fans out (>= 2 instances per scattered stage).
WORKLOAD_SIZES = {"sort": 6_000_000, "video": 6_000_000, "lightgbm": 1_500_000}


def mode_unusable(mode: str) -> str | None:
    if mode == "loopback":
        return None
    if not (Path("/usr/sbin/sshd").exists() or shutil.which("sshd")):
        return "needs openssh-server (/usr/sbin/sshd)"
    if mode == "netns":
        if os.geteuid() != 0:
            return "needs root"
        from sonic.emulation.netns import netns_unusable_reason

        return netns_unusable_reason()
    return None


@pytest.fixture(scope="session")
def workload_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inputs")
    return {name: generate_input(load_app(name), root / f"{name}.in", size, seed=7)
            for name, size in WORKLOAD_SIZES.items()}


@pytest.fixture(scope="module", params=["loopback", "ssh", "netns"])
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSpec]:
    mode = request.param
    reason = mode_unusable(mode)
    if reason:
        pytest.skip(f"{mode} cluster: {reason}")
    root = tmp_path_factory.mktemp(f"cluster-{mode}")
    options = HarnessOptions(ssh_config_path=None)
    kwargs = {"vm_mbps": 800.0, "s3_mbps": 400.0} if mode == "netns" else {}
    with local_cluster(3, mode, root, options=options, **kwargs) as spec:
        yield spec


@pytest.fixture(scope="module")
def coordinator(cluster: ClusterSpec) -> Iterator[Coordinator]:
    assert cluster.secret_file
    coord = Coordinator(cluster, read_secret(cluster.secret_file))
    try:
        yield coord
    finally:
        coord.close()
