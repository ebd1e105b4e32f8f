"""Blocking client of an agent: control calls and streamed object transfers.

Connections are authenticated once and pooled (one per concurrent caller), so a call costs a
round trip, not a handshake. Every error names the agent's address.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xxhash

from sonic import __version__
from sonic.errors import CorruptObjectError, ExecutionError, SonicError, TransportError
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


class RemoteCallError(SonicError):
    """The agent answered with an error; ``kind`` says whose fault (instance, fetch, request).

    For ``fetch`` errors ``cause`` says what was wrong with the input (``corrupt``, ``missing``,
    ``unreachable`` source, or ``local`` disk), ``input`` names the object key and ``source``
    the VM (or ``s3``) it was fetched from, so the coordinator can regenerate exactly that object.
    """

    def __init__(self, message: str, kind: str, *, cause: str = "", input: str | None = None,
                 source: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.cause = cause
        self.input = input
        self.source = source

    @classmethod
    def from_reply(cls, peer: str, reply: dict[str, Any], default_kind: str) -> RemoteCallError:
        def text(key: str) -> str | None:
            value = reply.get(key)
            return value if isinstance(value, str) else None

        return cls(f"agent {peer}: {reply.get('error', 'unknown error')}", str(reply.get("kind", default_kind)),
                   cause=text("cause") or "", input=text("input"), source=text("source"))


class AgentClient:
    def __init__(self, host: str, port: int, secret: bytes, name: str = "agent",
                 timeouts: Timeouts = Timeouts()) -> None:
        self.host, self.port, self.name = host, int(port), name
        self.secret = secret
        self.timeouts = timeouts
        self._idle: list[tuple[socket.socket, float]] = []   # (connection, monotonic time it went idle)
        self._busy: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def peer(self) -> str:
        return f"{self.name} ({self.host}:{self.port})"

    # ------------------------------------------------------------------ connections
    def _connect(self) -> socket.socket:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeouts.connect_s)
        except OSError as exc:
            raise TransportError(f"cannot connect to agent {self.peer}: {exc.strerror or exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.settimeout(self.timeouts.control_s)
            protocol.client_handshake(sock, self.secret, self.peer)
        except SonicError:
            sock.close()
            raise
        except OSError as exc:
            # A reset or timeout mid-handshake is the same failure as a refused connect.
            sock.close()
            reason = "did not complete the handshake in time" if isinstance(exc, socket.timeout) else str(exc)
            raise TransportError(f"cannot connect to agent {self.peer}: {reason}") from None
        return sock

    @contextmanager
    def connection(self) -> Iterator[socket.socket]:
        stale: list[socket.socket] = []
        with self._lock:
            sock = None
            while self._idle:
                candidate, since = self._idle.pop()
                if time.monotonic() - since < self.timeouts.pool_idle_s:
                    sock = candidate
                    break
                stale.append(candidate)  # the agent may be about to close it: never reuse
        for old in stale:
            old.close()
        if sock is None:
            sock = self._connect()
        with self._lock:
            self._busy.add(sock)
        ok = False
        try:
            yield sock
            ok = True
        except TimeoutError:
            raise TransportError(f"agent {self.peer} did not answer in time") from None
        except OSError as exc:
            if exc.errno in LOCAL_ERRNOS and not isinstance(exc, ConnectionError):
                raise  # our own disk (full, read-only, ...): not the agent's fault
            raise TransportError(f"connection to agent {self.peer} failed: {exc}") from None
        finally:
            with self._lock:
                self._busy.discard(sock)
                if ok:
                    self._idle.append((sock, time.monotonic()))
            if not ok:
                sock.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for sock, _ in idle:
            sock.close()

    def abort(self) -> None:
        """Break every call in flight (their threads get a TransportError at once) and drop
        pooled connections: used when the agent is declared lost, so no thread stays blocked
        on a hung or unreachable VM."""
        with self._lock:
            busy = list(self._busy)
        for sock in busy:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                continue  # already closed by its owner: nothing left to break
        self.close()

    # ------------------------------------------------------------------ calls
    def call(self, op: str, timeout: float | None | str = "control", **fields: Any) -> dict[str, Any]:
        """``timeout``: "control" (the default), seconds, or None for a bulk call (``bulk_s``):
        never an unbounded wait."""
        if timeout == "control":
            deadline = self.timeouts.control_s
        elif timeout is None:
            deadline = self.timeouts.bulk_s
        else:
            deadline = float(timeout)
        with self.connection() as sock:
            sock.settimeout(deadline)
            protocol.send_frame(sock, {"op": op, **fields})
            reply = protocol.recv_frame(sock, self.peer)
        if not reply.get("ok"):
            raise RemoteCallError.from_reply(self.peer, reply, "request")
        return reply

    def ping(self) -> dict[str, Any]:
        reply = self.call("ping")
        if reply.get("version") != __version__:
            raise TransportError(
                f"agent {self.peer} runs sonic {reply.get('version')}, this coordinator {__version__}; "
                "restart the cluster (`sonic cluster down && sonic cluster up ...`) to redeploy"
            )
        return reply

    def run(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            limit = request.get("timeout_s") or self.timeouts.stage_s
            return self.call("run", timeout=self.timeouts.run_deadline(float(limit)), **request)
        except RemoteCallError as exc:
            if exc.kind == "instance":
                raise ExecutionError(str(exc)) from None
            raise

    def warm(self, app: str) -> dict[str, Any]:
        return self.call("warm", timeout=self.timeouts.warm_s, app=app)

    def drop(self, job: str) -> None:
        self.call("drop", job=job)

    def cancel(self, job: str, reason: str) -> None:
        """End ``job`` on this agent: kill its running instances, delete its objects, refuse
        any later request for it."""
        self.call("cancel", job=job, reason=reason)

    def lease(self, job: str, ttl_s: float) -> None:
        self.call("lease", job=job, ttl_s=ttl_s)

    def get_to_file(self, job: str, key: str, path: Path, *, size: int | None = None,
                    checksum: str | None = None, offset: int | None = None) -> float:
        """Stream object ``key`` into ``path`` (via a temp name), verify size and checksum.
        With ``offset`` (and ``size``) only that range of the object: one partition of a pack."""
        t0 = time.perf_counter()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        request: dict[str, Any] = {"op": "get", "job": job, "key": key}
        if offset is not None:
            if size is None:
                raise ValueError("a ranged get needs the size of the range")
            request.update(offset=offset, length=size)
        with self.connection() as sock:
            sock.settimeout(self.timeouts.control_s)
            protocol.send_frame(sock, request)
            head = protocol.recv_frame(sock, self.peer)
            if not head.get("ok"):
                raise RemoteCallError(f"agent {self.peer}: {head.get('error')}", str(head.get("kind", "fetch")))
            total = int(head["size"])
            sock.settimeout(self.timeouts.transfer_idle_s)
            digest = xxhash.xxh3_128()
            buf = bytearray(min(RECV_CHUNK, max(total, 1)))
            view = memoryview(buf)
            got = 0
            with open(tmp, "wb") as fh:
                while got < total:
                    n = sock.recv_into(view[: min(len(buf), total - got)])
                    if n == 0:
                        raise TransportError(f"agent {self.peer} closed the connection during {key} ({got}/{total} bytes)")
                    digest.update(view[:n])
                    fh.write(view[:n])
                    got += n
        expected = checksum or head.get("checksum")
        if (size is not None and total != size) or (expected and digest.hexdigest() != expected):
            tmp.unlink(missing_ok=True)
            raise CorruptObjectError(f"object {key} from agent {self.peer} failed its size/checksum check; it is corrupt")
        tmp.rename(path)
        return time.perf_counter() - t0

    def put_file(self, job: str, key: str, path: Path, checksum: str) -> float:
        t0 = time.perf_counter()
        size = path.stat().st_size
        with self.connection() as sock:
            sock.settimeout(self.timeouts.transfer_idle_s)
            protocol.send_frame(sock, {"op": "put", "job": job, "key": key, "size": size, "checksum": checksum})
            with open(path, "rb") as fh:
                if size:
                    sock.sendfile(fh)
            reply = protocol.recv_frame(sock, self.peer)
        if not reply.get("ok"):
            raise RemoteCallError(f"agent {self.peer}: {reply.get('error')}", str(reply.get("kind", "request")))
        return time.perf_counter() - t0
