"""How a request reaches an agent: the transport under :class:`~sonic.runtime.client.AgentClient`.

A :class:`Transport` sends one request map to one agent and returns its reply map (whether the
agent says ``ok`` or not), or raises :class:`~sonic.errors.TransportError` when it cannot (an
``OSError`` of this machine's own disk passes through: it is not the agent's fault). Streamed
objects have two more calls: :meth:`Transport.receive` (``get``: a header, then the bytes) and
:meth:`Transport.send` (``put``: the request, the bytes, then the reply).

:class:`TcpTransport` is the real one (authenticated, pooled TCP connections; the default).
:class:`MockTransport` answers in memory from a handler function, as httpx's MockTransport
does, so coordinator logic is unit-tested without sockets or agents::

    def handler(agent: Endpoint, request: dict[str, Any]) -> dict[str, Any]:
        if request["op"] == "ping":  # a whole PingReply (sonic.runtime.messages): replies are typed
            return {"ok": True, "version": sonic.__version__, "name": agent.name, "slots": 1, "memory_mb": 1024,
                    "pid": 1, "busy": 0, "workers": [], "idle_workers": 0, "leases": []}
        raise TransportError(f"{agent.name} is unreachable")

    coordinator = Coordinator(cluster, secret, transport=MockTransport(handler))

A client takes ``transport.session()``: a TCP session has connections of its own (a probe
on a fresh connection proves the agent still accepts new ones), a fake is shared.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sonic.errors import SonicError, TransportError
from sonic.runtime import protocol

RECV_CHUNK = 4 << 20
# Errors of this machine's own disk met while a transfer writes its file: the peer is fine, so
# they must not be reported as a network failure (which would blame, and lose, the peer).
LOCAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG,
                          errno.EISDIR, errno.ENOTDIR, errno.ENAMETOOLONG, errno.EMFILE, errno.ENFILE})

DEFAULT_STAGE_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class Timeouts:
    """Every deadline of the coordinator and agent network waits, in seconds (one settings object).

    ``stage_s`` is the default stage timeout (a stage may set its own, a run may override it);
    a ``run`` call waits at most its stage timeout plus ``run_slack_s`` (fetching inputs,
    uploading outputs, waiting for a slot). ``warm_s`` bounds starting an app's workers.
    ``lease_s`` is the job lease: agents drop a job whose coordinator has not renewed it for
    that long. ``pool_idle_s`` retires pooled connections before the agent's idle deadline.
    ``bulk_s`` bounds calls that name no deadline (benchmarks, calibration).
    """

    connect_s: float = 5.0
    control_s: float = 30.0
    transfer_idle_s: float = 60.0
    warm_s: float = 300.0
    stage_s: float = DEFAULT_STAGE_TIMEOUT_S
    run_slack_s: float = 600.0
    lease_s: float = 120.0
    pool_idle_s: float = 60.0
    bulk_s: float = 1800.0   # one bulk call with no deadline of its own (benchmark transfer, calibration)

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if not isinstance(value, (int, float)) or not 0 < value < 1e7:
                raise ValueError(f"timeout {name} must be a positive number of seconds below 1e7, got {value!r}")

    def run_deadline(self, stage_timeout_s: float) -> float:
        return stage_timeout_s + self.run_slack_s


#: Receives the bytes of a streamed object, chunk by chunk (hash them, write them).
Sink = Callable[[memoryview], None]


@dataclass(frozen=True)
class Endpoint:
    """One agent's address, with the name errors use for it."""

    name: str
    host: str
    port: int

    @property
    def peer(self) -> str:
        return f"{self.name} ({self.host}:{self.port})"


class Transport(ABC):
    """Carries requests to agents (see the module docstring)."""

    @abstractmethod
    def request(self, agent: Endpoint, doc: dict[str, Any], timeouts: Timeouts, deadline_s: float) -> dict[str, Any]:
        """Send ``doc``, return the agent's reply within ``deadline_s``."""

    @abstractmethod
    def receive(self, agent: Endpoint, doc: dict[str, Any], timeouts: Timeouts, sink: Sink) -> dict[str, Any]:
        """Send ``doc`` (a ``get``), return the header; if it is ``ok``, its ``size`` bytes went to ``sink``."""

    @abstractmethod
    def send(self, agent: Endpoint, doc: dict[str, Any], timeouts: Timeouts, path: Path) -> dict[str, Any]:
        """Send ``doc`` (a ``put``) and then the bytes of ``path``; return the reply."""

    def session(self) -> Transport:
        """The transport one client should use (itself unless connections are per client)."""
        return self

    @abstractmethod
    def abort(self, agent: Endpoint) -> None:
        """Break every call in flight to ``agent`` (they raise TransportError at once)."""

    @abstractmethod
    def close(self, agent: Endpoint) -> None:
        """Drop idle connections to ``agent``."""


# ---------------------------------------------------------------------------- TCP
@dataclass
class _Pool:
    idle: list[tuple[socket.socket, float]] = field(default_factory=list)   # (connection, when it went idle)
    busy: set[socket.socket] = field(default_factory=set)


class TcpTransport(Transport):
    """Authenticated TCP connections (:mod:`sonic.runtime.protocol`), authenticated once and
    pooled per agent (one per concurrent caller), so a call costs a round trip, not a handshake."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self._pools: dict[Endpoint, _Pool] = {}
        self._lock = threading.Lock()

    def session(self) -> Transport:
        return TcpTransport(self.secret)

    def _pool(self, agent: Endpoint) -> _Pool:
        with self._lock:
            return self._pools.setdefault(agent, _Pool())

    def _connect(self, agent: Endpoint, timeouts: Timeouts) -> socket.socket:
        try:
            sock = socket.create_connection((agent.host, agent.port), timeout=timeouts.connect_s)
        except OSError as exc:
            raise TransportError(f"cannot connect to agent {agent.peer}: {exc.strerror or exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.settimeout(timeouts.control_s)
            protocol.client_handshake(sock, self.secret, agent.peer)
        except SonicError:
            sock.close()
            raise
        except OSError as exc:
            # A reset or timeout mid-handshake is the same failure as a refused connect.
            sock.close()
            reason = "did not complete the handshake in time" if isinstance(exc, socket.timeout) else str(exc)
            raise TransportError(f"cannot connect to agent {agent.peer}: {reason}") from None
        return sock

    @contextmanager
    def connection(self, agent: Endpoint, timeouts: Timeouts) -> Iterator[socket.socket]:
        pool = self._pool(agent)
        stale: list[socket.socket] = []
        with self._lock:
            sock = None
            while pool.idle:
                candidate, since = pool.idle.pop()
                if time.monotonic() - since < timeouts.pool_idle_s:
                    sock = candidate
                    break
                stale.append(candidate)  # the agent may be about to close it: never reuse
        for old in stale:
            old.close()
        if sock is None:
            sock = self._connect(agent, timeouts)
        with self._lock:
            pool.busy.add(sock)
        ok = False
        try:
            yield sock
            ok = True
        except TimeoutError:
            raise TransportError(f"agent {agent.peer} did not answer in time") from None
        except OSError as exc:
            if exc.errno in LOCAL_ERRNOS and not isinstance(exc, ConnectionError):
                raise  # our own disk (full, read-only, ...): not the agent's fault
            raise TransportError(f"connection to agent {agent.peer} failed: {exc}") from None
        finally:
            with self._lock:
                pool.busy.discard(sock)
                if ok:
                    pool.idle.append((sock, time.monotonic()))
            if not ok:
                sock.close()

    def request(self, agent: Endpoint, doc: dict[str, Any], timeouts: Timeouts, deadline_s: float) -> dict[str, Any]:
        with self.connection(agent, timeouts) as sock:
            sock.settimeout(deadline_s)
            protocol.send_frame(sock, doc)
            return protocol.recv_frame(sock, agent.peer)

    def receive(self, agent: Endpoint, doc: dict[str, Any], timeouts: Timeouts, sink: Sink) -> dict[str, Any]:
        with self.connection(agent, timeouts) as sock:
            sock.settimeout(timeouts.control_s)
            protocol.send_frame(sock, doc)
            head = protocol.recv_frame(sock, agent.peer)
            if not head.get("ok"):
                return head
            total = int(head["size"])
            sock.settimeout(timeouts.transfer_idle_s)
            buf = bytearray(min(RECV_CHUNK, max(total, 1)))
            view = memoryview(buf)
            got = 0
            while got < total:
                n = sock.recv_into(view[: min(len(buf), total - got)])
                if n == 0:
                    raise TransportError(f"agent {agent.peer} closed the connection during {doc.get('key')} "
                                         f"({got}/{total} bytes)")
                sink(view[:n])
                got += n
            return head

    def send(self, agent: Endpoint, doc: dict[str, Any], timeouts: Timeouts, path: Path) -> dict[str, Any]:
        with self.connection(agent, timeouts) as sock:
            sock.settimeout(timeouts.transfer_idle_s)
            protocol.send_frame(sock, doc)
            with open(path, "rb") as fh:
                if doc.get("size"):
                    sock.sendfile(fh)
            return protocol.recv_frame(sock, agent.peer)

    def close(self, agent: Endpoint) -> None:
        pool = self._pool(agent)
        with self._lock:
            idle, pool.idle = pool.idle, []
        for sock, _ in idle:
            sock.close()

    def abort(self, agent: Endpoint) -> None:
        pool = self._pool(agent)
        with self._lock:
            busy = list(pool.busy)
        for sock in busy:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                continue  # already closed by its owner: nothing left to break
        self.close(agent)


# ---------------------------------------------------------------------------- in memory
#: A fake agent: the request map in, the reply map out (or raise TransportError). For a
#: ``get`` the reply carries the object's bytes under ``body`` (only the fake reads that key);
#: a ``put`` request arrives with the file's bytes under ``body``.
Handler = Callable[[Endpoint, dict[str, Any]], dict[str, Any]]


class MockTransport(Transport):
    """Answers every request in memory with ``handler`` (no sockets); for tests."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.aborted: list[str] = []   # agents whose calls were aborted (a coordinator declared them lost)

    def request(self, agent: Endpoint, doc: dict[str, Any], timeouts: Timeouts, deadline_s: float) -> dict[str, Any]:
        return self.handler(agent, dict(doc))

    def receive(self, agent: Endpoint, doc: dict[str, Any], timeouts: Timeouts, sink: Sink) -> dict[str, Any]:
        reply = dict(self.handler(agent, dict(doc)))
        body = reply.pop("body", b"")
        if reply.get("ok"):
            reply.setdefault("size", len(body))
            sink(memoryview(body))
        return reply

    def send(self, agent: Endpoint, doc: dict[str, Any], timeouts: Timeouts, path: Path) -> dict[str, Any]:
        return self.handler(agent, {**doc, "body": path.read_bytes()})

    def abort(self, agent: Endpoint) -> None:
        self.aborted.append(agent.name)

    def close(self, agent: Endpoint) -> None:
        """Nothing to close: no connections."""
