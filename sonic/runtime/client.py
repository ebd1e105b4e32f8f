"""Blocking client of an agent: control calls and streamed object transfers.

Requests go through a :class:`~sonic.runtime.transport.Transport`: by default authenticated
TCP connections, pooled (one per concurrent caller), so a call costs a round trip, not a
handshake; tests inject :class:`~sonic.runtime.transport.MockTransport`. Every error names
the agent's address.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import xxhash

from sonic import __version__
from sonic.errors import AgentRequestError, CorruptObjectError, ExecutionError, TransportError
from sonic.runtime.transport import DEFAULT_STAGE_TIMEOUT_S, Endpoint, TcpTransport, Timeouts, Transport

__all__ = ["DEFAULT_STAGE_TIMEOUT_S", "AgentClient", "RemoteCallError", "Timeouts"]


#: The error of an agent's ``ok: false`` reply: the same class the agent raised
#: (``kind``, ``cause``, ``input``, ``source``; see :class:`sonic.errors.AgentRequestError`).
RemoteCallError = AgentRequestError


class AgentClient:
    def __init__(self, host: str, port: int, secret: bytes, name: str = "agent",
                 timeouts: Timeouts = Timeouts(),  # noqa: B008 - frozen settings: one shared instance is meant
                 transport: Transport | None = None) -> None:
        """``transport`` None: TCP connections of this client's own (authenticated with ``secret``)."""
        self.host, self.port, self.name = host, int(port), name
        self.endpoint = Endpoint(name, host, int(port))
        self.timeouts = timeouts
        self.transport = transport if transport is not None else TcpTransport(secret)

    @property
    def peer(self) -> str:
        return self.endpoint.peer

    def close(self) -> None:
        self.transport.close(self.endpoint)

    def abort(self) -> None:
        """Break every call in flight (their threads get a TransportError at once) and drop
        pooled connections: used when the agent is declared lost, so no thread stays blocked
        on a hung or unreachable VM."""
        self.transport.abort(self.endpoint)

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
        reply = self.transport.request(self.endpoint, {"op": op, **fields}, self.timeouts, deadline)
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
        request: dict[str, Any] = {"op": "get", "job": job, "key": key}
        if offset is not None:
            if size is None:
                raise ValueError("a ranged get needs the size of the range")
            request.update(offset=offset, length=size)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        digest = xxhash.xxh3_128()
        received = 0
        with open(tmp, "wb") as fh:
            def sink(chunk: memoryview) -> None:
                nonlocal received
                digest.update(chunk)
                fh.write(chunk)
                received += len(chunk)

            try:
                head = self.transport.receive(self.endpoint, request, self.timeouts, sink)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        if not head.get("ok"):
            tmp.unlink(missing_ok=True)
            raise RemoteCallError(f"agent {self.peer}: {head.get('error')}", str(head.get("kind", "fetch")))
        total = int(head["size"])
        expected = checksum or head.get("checksum")
        if received != total or (size is not None and total != size) or (expected and digest.hexdigest() != expected):
            tmp.unlink(missing_ok=True)
            raise CorruptObjectError(f"object {key} from agent {self.peer} failed its size/checksum check; it is corrupt")
        tmp.rename(path)
        return time.perf_counter() - t0

    def put_file(self, job: str, key: str, path: Path, checksum: str) -> float:
        t0 = time.perf_counter()
        size = path.stat().st_size
        reply = self.transport.send(self.endpoint, {"op": "put", "job": job, "key": key, "size": size,
                                                    "checksum": checksum}, self.timeouts, path)
        if not reply.get("ok"):
            raise RemoteCallError(f"agent {self.peer}: {reply.get('error')}", str(reply.get("kind", "request")))
        return time.perf_counter() - t0
