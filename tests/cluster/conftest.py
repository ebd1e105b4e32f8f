"""Fixtures for the local cluster harness tests (tests/cluster)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from sonic.cluster.readiness import AgentProgram
from sonic.emulation.local import HarnessOptions

HERE = Path(__file__).resolve().parent
FAKE_AGENT = HERE / "fake_agent.py"


def _load_fake() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sonic_tests_fake_agent", FAKE_AGENT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fake = _load_fake()


def fake_program(*extra: str) -> AgentProgram:
    """The stand-in agent (same contract as sonic.runtime.agent), with extra test options."""
    return AgentProgram((sys.executable, str(FAKE_AGENT), *extra), fake.fake_ping)


@pytest.fixture(scope="session")
def make_program() -> Callable[..., AgentProgram]:
    """``make_program("--fake-version", "9")``: the stand-in agent with extra test options."""
    return fake_program


@pytest.fixture
def program() -> AgentProgram:
    """The stand-in: these tests check the harness, not the agent (tested in tests/runtime)."""
    return fake_program()


@pytest.fixture
def options(program: AgentProgram) -> HarnessOptions:
    # No ~/.ssh/config: the developer's own settings must not change test outcomes.
    return HarnessOptions(program=program, ssh_config_path=None, agent_ready_timeout_s=20.0)


@pytest.fixture
def cluster_root(tmp_path: Path) -> Path:
    return tmp_path / ".sonic"


def netns_usable() -> str | None:
    from sonic.emulation.netns import netns_unusable_reason

    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "needs iproute2"
    return netns_unusable_reason()


def sshd_usable() -> str | None:
    from sonic.emulation.sshd import SSHD_BINARY

    if not (Path(SSHD_BINARY).exists() or shutil.which("sshd")):
        return "needs openssh-server (/usr/sbin/sshd)"
    if shutil.which("ssh-keygen") is None:
        return "needs ssh-keygen"
    return None


# Session scope: pytest sets up higher-scoped fixtures first, so the skip happens before any
# module-scoped fixture (a shared sshd) tries to start the missing server.
@pytest.fixture(scope="session")
def require_sshd() -> None:
    reason = sshd_usable()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def require_netns() -> None:
    reason = netns_usable()
    if reason:
        pytest.skip(reason)

