"""Is an agent up? Wait for its ``agent.json``, a TCP connect, then a version handshake.

The agent contract (sonic.runtime.agent): once listening it atomically writes
``DATA_DIR/agent.json`` = {"name", "pid", "host", "port", "version", "started"}. Readiness
is checked in that order, all phases under one deadline, polling with exponential backoff:

1. ``agent.json`` exists (read locally or over SFTP, via the ``read_info`` callable);
2. a TCP connect to its port succeeds (from here, i.e. through the real network path);
3. ``ping`` answers and reports the same ``sonic.__version__`` as this client.

The health check itself speaks the agent protocol, which belongs to the runtime above this
package: callers pass it in as :class:`AgentProgram`'s ``ping`` (the real one is
:func:`sonic.runtime.program.ping_agent`, via :func:`sonic.runtime.program.real_agent_program`).
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import sonic
from sonic.errors import (
    AuthenticationError,
    ClusterFileError,
    TransportError,
)
from sonic.polling import backoff

# A cold agent imports numpy/pandas/boto3 and builds its worker pool: several seconds on a
# busy 2-core CI box; 30 s is generous yet still fails fast on a crashed agent (we also
# watch the process, so a crash is reported at once, not after the deadline).
AGENT_READY_TIMEOUT_S = 30.0
# One TCP connect or ping attempt; loopback and bridge links answer in microseconds, so a
# second means the peer is not listening (yet).
PROBE_TIMEOUT_S = 2.0

AGENT_INFO_FILE = "agent.json"


class PingFn(Protocol):
    def __call__(self, host: str, port: int, secret: bytes, peer_name: str, timeout_s: float) -> dict[str, Any]: ...


@dataclass(frozen=True)
class AgentProgram:
    """How to start an agent and how to health-check it.

    ``argv_prefix`` is followed by the contract's options (--name, --bind, ...). The harness
    always uses :func:`sonic.runtime.program.real_agent_program`; tests substitute a stand-in that honours the same
    contract.
    """

    argv_prefix: tuple[str, ...]
    ping: PingFn


def agent_args(
    name: str,
    bind: str,
    port: int,
    data_dir: str,
    secret_file: str,
    slots: int,
    memory_mb: int,
    s3_endpoint: str | None = None,
    s3_bucket: str | None = None,
    s3_region: str | None = None,
) -> list[str]:
    """The agent's command-line options, per the runtime contract."""
    args = [
        "--name", name, "--bind", bind, "--port", str(port), "--data-dir", data_dir,
        "--secret-file", secret_file, "--slots", str(slots), "--memory-mb", str(memory_mb),
    ]
    if s3_endpoint:
        args += ["--s3-endpoint", s3_endpoint]
    if s3_bucket:
        args += ["--s3-bucket", s3_bucket]
    if s3_region:
        args += ["--s3-region", s3_region]
    return args


def make_secret(path: Path) -> bytes:
    """Create a fresh cluster secret file (hex, mode 0600 from the start: never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text + "\n")
    os.chmod(path, 0o600)  # O_CREAT's mode does not apply to a file that already existed
    return bytes.fromhex(text)


def read_secret(path: Path | str) -> bytes:
    """The cluster secret as bytes (the file holds hex)."""
    path = Path(os.path.expanduser(str(path)))
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        raise ClusterFileError(f"cluster secret file {path} does not exist; run `sonic cluster up` again") from None
    except ValueError:
        raise ClusterFileError(f"cluster secret file {path} does not hold a hex secret; recreate the cluster") from None


def _tcp_connect(host: str, port: int, timeout_s: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wait_agent_ready(
    name: str,
    host: str,
    read_info: Callable[[], dict[str, Any] | None],
    secret: bytes,
    *,
    ping: PingFn,
    timeout_s: float = AGENT_READY_TIMEOUT_S,
    alive: Callable[[], bool] | None = None,
    diagnostics: Callable[[], str] | None = None,
    expected_version: str = sonic.__version__,
) -> dict[str, Any]:
    """Block until agent ``name`` is ready; return its agent.json plus the ping answer.

    ``host`` is the address we reach the agent at (the agent.json host may be a bind-all
    address). ``alive`` reports whether the agent process still runs, so a crash surfaces
    immediately with ``diagnostics()`` (typically the log tail) instead of at the deadline.
    """
    deadline = time.monotonic() + timeout_s
    phase = "waiting for agent.json"
    info: dict[str, Any] | None = None
    port: int | None = None
    last_error = ""

    def fail(why: str) -> TransportError:
        where = f"{host}:{port}" if port else host
        extra = diagnostics() if diagnostics else ""
        return TransportError(f"agent {name} at {where} {why}" + (f"; {extra}" if extra else ""))

    for remaining in backoff(deadline):
        if alive is not None and not alive():
            raise fail("exited during start-up")
        if info is None:
            info = read_info()
            if info is None:
                continue
            try:
                port = int(info["port"])
            except (KeyError, TypeError, ValueError):
                raise fail(f"wrote an agent.json without a valid port: {info!r}") from None
            phase = "waiting for its TCP port"
        assert port is not None
        if phase == "waiting for its TCP port":
            if not _tcp_connect(host, port, min(PROBE_TIMEOUT_S, remaining)):
                continue
            phase = "waiting for a ping answer"
        try:
            answer = ping(host, port, secret, name, min(PROBE_TIMEOUT_S, remaining))
        except AuthenticationError as exc:
            raise fail(f"refused the cluster secret ({exc}); the agent holds another cluster's secret") from None
        except TransportError as exc:
            last_error = str(exc)
            continue
        version = answer.get("version")
        if version != expected_version:
            raise fail(
                f"runs sonic {version} but this client is sonic {expected_version}; redeploy it: "
                "`sonic cluster down` then `sonic cluster up` (or install the same sonic version on the VM)"
            )
        return {**info, **{k: v for k, v in answer.items() if k not in info}}
    detail = f" (last error: {last_error})" if last_error else ""
    raise fail(f"was not ready within {timeout_s:g}s while {phase}{detail}")
