"""Fixtures of the fault-injection tests: real agents on local clusters (see
``reliability_helpers`` for the helpers the tests share)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Helpers import as plain modules under --import-mode=importlib; the project root makes the
# fault apps importable as ``tests.reliability.faultapps`` here exactly as on the agents.
_HERE = Path(__file__).resolve().parent
for _path in (str(_HERE), str(_HERE.parents[1])):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from reliability_helpers import SORT_BYTES, all_pids, assert_gone, options, worker_pids  # noqa: E402

from sonic.app import load_app  # noqa: E402
from sonic.cluster.spec import ClusterSpec  # noqa: E402
from sonic.emulation.local import local_cluster  # noqa: E402
from sonic.inputs import generate_input  # noqa: E402


@pytest.fixture(scope="session")
def sort_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_input(load_app("sort"), tmp_path_factory.mktemp("sort-input") / "sort.in", SORT_BYTES, seed=11)


@pytest.fixture(scope="session")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSpec]:
    """One loopback cluster for all tests that leave every agent alive (each leaves it clean)."""
    root = tmp_path_factory.mktemp("shared-cluster")
    with local_cluster(3, "loopback", root, options=options()) as spec:
        yield spec
        # After every job, fault and refusal of the session: the secret is in no log and no
        # file but its own (mode 0600).
        assert spec.secret_file
        secret = Path(spec.secret_file)
        assert secret.stat().st_mode & 0o777 == 0o600
        needle = secret.read_text().strip().encode()
        leaks = [p for p in root.rglob("*") if p.is_file() and p != secret and needle in p.read_bytes()]
        assert not leaks, f"the cluster secret appears in {leaks}"
        workers = [pid for pids in worker_pids(spec).values() for pid in pids]
    assert_gone(all_pids(spec, workers))   # agents, S3 server and every worker process
    assert not secret.exists(), "cluster down must remove the secret"


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[ClusterSpec]:
    """A loopback cluster of its own, for tests that kill agents."""
    with local_cluster(3, "loopback", tmp_path / "cluster", options=options()) as spec:
        yield spec
    assert_gone(all_pids(spec))
