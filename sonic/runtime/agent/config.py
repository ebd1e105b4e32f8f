"""The agent's settings: what ``python -m sonic.runtime.agent`` was started with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sonic.runtime.remote import RemoteSettings


@dataclass(frozen=True)
class AgentConfig:
    name: str
    bind: str
    port: int
    data_dir: Path
    secret: bytes
    slots: int
    memory_mb: int
    remote: RemoteSettings | None
    worker_start_timeout_s: float = 120.0
    handshake_timeout_s: float = 10.0
    verify_local: str = "always"        # "always" | "changed": see objects.Checksums
    # Deadlines and bounds of the agent's own waits (see docs/reliability.md).
    idle_worker_s: float = 300.0        # an idle warm worker is stopped after this long
    max_idle_workers: int = 0           # idle warm workers kept per agent (0: twice the slots)
    connection_idle_s: float = 600.0    # an authenticated connection silent this long is closed
    stage_timeout_s: float = 3600.0     # limit of a run whose request names none
    slot_wait_s: float = 900.0          # a run waits at most this long for a free slot
    housekeeping_s: float = 1.0         # period of lease expiry and idle-worker reaping
