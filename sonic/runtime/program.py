"""The real agent program: how to start ``sonic.runtime.agent`` and how to health-check it.

:mod:`sonic.cluster.readiness` waits for any agent that honours the start-up contract and
takes the health check as a parameter; this module supplies the real one, which speaks the
agent protocol through :class:`sonic.runtime.client.AgentClient`.
"""

from __future__ import annotations

import sys
from typing import Any

from sonic.cluster.readiness import PROBE_TIMEOUT_S, AgentProgram
from sonic.errors import SonicError, TransportError
from sonic.runtime.client import AgentClient, Timeouts

AGENT_MODULE = "sonic.runtime.agent"


def ping_agent(host: str, port: int, secret: bytes, peer_name: str, timeout_s: float = PROBE_TIMEOUT_S) -> dict[str, Any]:
    """Health check through the runtime's own client; returns the agent's answer (has "version").

    Uses the raw ``ping`` call rather than ``AgentClient.ping()``: the latter already rejects a
    version mismatch as a TransportError, which a readiness loop cannot tell from "not up
    yet"; comparing in the readiness loop makes a mismatch fail at once with the redeploy hint.
    """
    client = AgentClient(host, port, secret, peer_name, Timeouts(connect_s=timeout_s, control_s=timeout_s))
    try:
        return dict(client.call("ping"))
    except TransportError:
        raise  # includes AuthenticationError, which callers treat as fatal
    except SonicError as exc:  # the agent answered, but with an error
        raise TransportError(f"agent {peer_name} at {host}:{port} answered the ping with an error: {exc}") from None
    except (OSError, EOFError) as exc:
        raise TransportError(f"agent {peer_name} at {host}:{port} did not answer a ping: {exc}") from None
    finally:
        client.close()


def real_agent_program(python: str = sys.executable) -> AgentProgram:
    # Same interpreter path on every "VM": local clusters share this machine's image.
    return AgentProgram((python, "-m", AGENT_MODULE), ping_agent)
