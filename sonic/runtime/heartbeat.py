"""Failure detection: a periodic, deadline-bound ping of every agent on its own connection.

A killed agent shows up at once (its connections reset), but a hung one (stopped process,
swapping VM) or an unreachable one (a cut link drops packets silently) would leave a blocking
``run`` call waiting forever. The heartbeat notices both: each agent is pinged every
``interval_s`` on a connection of its own, each step of a ping (connect, handshake, answer)
must complete within ``timeout_s``, and ``misses`` consecutive failures declare the VM lost.

Detection takes about ``misses * (interval_s + timeout_s)`` for a hung or unreachable agent
(12 s with the defaults 1 s, 5 s, 2; a refused connection fails at once, so a dead host with
a live kernel is found in ``misses * interval_s``), while a VM that is merely busy (its agent answers pings
from a thread of its own, independent of the work running in worker processes) is never
declared lost. Nothing here sleeps blindly: the ping loop waits on an Event with the interval
as timeout, so ``stop()`` ends it at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sonic.errors import SonicError, TransportError
from sonic.runtime.client import AgentClient, Timeouts
from sonic.runtime.transport import Transport

log = logging.getLogger("sonic.heartbeat")


@dataclass(frozen=True)
class HeartbeatSettings:
    """Seconds and counts of the failure detector (see the module docstring for the trade-off)."""

    interval_s: float = 1.0
    timeout_s: float = 5.0
    misses: int = 2

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or self.timeout_s <= 0 or self.misses < 1:
            raise ValueError("heartbeat interval and timeout must be positive and misses at least 1")


@dataclass(frozen=True)
class Target:
    name: str
    host: str
    port: int


def probe(target: Target, secret: bytes, timeout_s: float, transport: Transport | None = None) -> SonicError | None:
    """One ping on a fresh connection within ``timeout_s``: None if the agent answered, else
    the error saying why not (an AuthenticationError means a misconfiguration, not a loss).
    ``transport``: how to reach the agent (None: TCP; a session of its own either way)."""
    client = AgentClient(target.host, target.port, secret, target.name,
                         Timeouts(connect_s=timeout_s, control_s=timeout_s),
                         transport.session() if transport is not None else None)
    try:
        client.call("ping")  # raw: a liveness check, whatever the reply's shape
        return None
    except SonicError as exc:
        return exc
    except OSError as exc:  # the client wraps socket errors, but a detector must never die of one
        return TransportError(f"agent {target.name} ({target.host}:{target.port}): {exc}")
    finally:
        client.close()


class Heartbeat:
    """Pings each target from a thread of its own; calls ``on_lost(name, reason)`` once per lost VM."""

    def __init__(self, targets: Mapping[str, Target], secret: bytes, settings: HeartbeatSettings,
                 on_lost: Callable[[str, str], None], transport: Transport | None = None) -> None:
        self.targets = dict(targets)
        self.transport = transport
        self.secret = secret
        self.settings = settings
        self.on_lost = on_lost
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._forgotten: set[str] = set()
        self._lock = threading.Lock()

    def start(self) -> Heartbeat:
        for target in self.targets.values():
            thread = threading.Thread(target=self._watch, args=(target,), name=f"sonic-heartbeat-{target.name}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def forget(self, name: str) -> None:
        """Stop watching a VM (it was declared lost by other means)."""
        with self._lock:
            self._forgotten.add(name)

    def _watching(self, name: str) -> bool:
        with self._lock:
            return name not in self._forgotten

    def _watch(self, target: Target) -> None:
        # A persistent connection would make a ping a single round trip, but a fresh one per
        # ping also proves the agent still accepts and authenticates new connections, which is
        # what every transfer to it needs. The cost (a handshake per interval) is negligible.
        misses = 0
        while not self._stop.wait(self.settings.interval_s) and self._watching(target.name):
            error = probe(target, self.secret, self.settings.timeout_s, self.transport)
            if error is None:
                misses = 0
                continue
            reason = str(error)
            misses += 1
            log.warning("heartbeat to %s missed (%d/%d): %s", target.name, misses, self.settings.misses, reason)
            if misses >= self.settings.misses and self._watching(target.name) and not self._stop.is_set():
                self.forget(target.name)
                self.on_lost(target.name, f"missed {misses} heartbeats (last: {reason})")
                return

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            # Each thread ends within one ping deadline (its probe) after the event is set.
            thread.join(self.settings.timeout_s * 2 + self.settings.interval_s)
        self._threads = []
