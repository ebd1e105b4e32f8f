"""Blocking client of an agent: control calls and streamed object transfers.

Requests go through a :class:`~sonic.runtime.transport.Transport`: by default authenticated
TCP connections, pooled (one per concurrent caller), so a call costs a round trip, not a
handshake; tests inject :class:`~sonic.runtime.transport.MockTransport`. Every error names
the agent's address.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import xxhash

from sonic import __version__
from sonic.errors import AgentRequestError, CorruptObjectError, ExecutionError, MalformedReplyError, TransportError
from sonic.runtime.messages import (
    REPLY_TYPES,
    AgentReply,
    AppInstallReply,
    CancelReply,
    DiskbenchReply,
    FetchReply,
    GcReply,
    PingReply,
    RawTcpServeReply,
    RunReply,
    SecondsReply,
    WarmReply,
)
from sonic.runtime.transport import DEFAULT_STAGE_TIMEOUT_S, Endpoint, TcpTransport, Timeouts, Transport

__all__ = ["DEFAULT_STAGE_TIMEOUT_S", "AgentClient", "RemoteCallError", "Timeouts"]


#: The error of an agent's ``ok: false`` reply: the same class the agent raised
#: (``kind``, ``cause``, ``input``, ``source``; see :class:`sonic.errors.AgentRequestError`).
RemoteCallError = AgentRequestError

Reply = TypeVar("Reply", bound=AgentReply)
Timeout = float | None | str


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
    def call(self, op: str, timeout: Timeout = "control", **fields: Any) -> dict[str, Any]:
        """One request as plain maps (the typed methods below decode the reply).
        ``timeout``: "control" (the default), seconds, or None for a bulk call (``bulk_s``):
        never an unbounded wait. An ``ok: false`` reply raises :class:`RemoteCallError`."""
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

    def _call(self, op: str, reply_type: type[Reply], timeout: Timeout = "control", **fields: Any) -> Reply:
        """:meth:`call`, its reply converted (strictly) into the op's reply Struct."""
        assert REPLY_TYPES[op] is reply_type, f"{op} answers with {REPLY_TYPES[op].__name__}"
        return self._decode(op, reply_type, self.call(op, timeout, **fields))

    def _decode(self, op: str, reply_type: type[Reply], reply: dict[str, Any]) -> Reply:
        try:
            return msgspec.convert(reply, type=reply_type, strict=True)
        except msgspec.ValidationError as exc:
            raise MalformedReplyError(
                f"agent {self.peer} sent a malformed {op!r} reply: {exc}; if it runs another version of "
                "sonic, restart the cluster (`sonic cluster down && sonic cluster up ...`)") from None

    def ping(self) -> PingReply:
        reply = self.call("ping")
        if reply.get("version") != __version__:  # compared before decoding: another version's reply may differ
            raise TransportError(
                f"agent {self.peer} runs sonic {reply.get('version')}, this coordinator {__version__}; "
                "restart the cluster (`sonic cluster down && sonic cluster up ...`) to redeploy"
            )
        return self._decode("ping", PingReply, reply)

    def run(self, request: dict[str, Any]) -> RunReply:
        try:
            limit = request.get("timeout_s") or self.timeouts.stage_s
            return self._call("run", RunReply, timeout=self.timeouts.run_deadline(float(limit)), **request)
        except RemoteCallError as exc:
            if exc.kind == "instance":
                raise ExecutionError(str(exc)) from None
            raise

    def warm(self, app: str) -> WarmReply:
        return self._call("warm", WarmReply, timeout=self.timeouts.warm_s, app=app)

    def drop(self, job: str) -> None:
        self._call("drop", AgentReply, job=job)

    def cancel(self, job: str, reason: str) -> CancelReply:
        """End ``job`` on this agent: kill its running instances, delete its objects, refuse
        any later request for it."""
        return self._call("cancel", CancelReply, job=job, reason=reason)

    def lease(self, job: str, ttl_s: float) -> None:
        self._call("lease", AgentReply, job=job, ttl_s=ttl_s)

    def gc(self) -> GcReply:
        """Delete the objects of every job with no live lease on this agent."""
        return self._call("gc", GcReply)

    def fetch(self, job: str, item: dict[str, Any], timeout: Timeout = "control") -> FetchReply:
        """Make one object local on this agent by its method (benchmarks, calibration)."""
        return self._call("fetch", FetchReply, timeout=timeout, job=job, item=item)

    def push(self, job: str, key: str) -> float:
        """Upload one of this agent's objects to remote storage; its seconds."""
        return self._call("push", SecondsReply, timeout=None, job=job, key=key).seconds

    def app_install(self, app: str, digest: str, archive: bytes | None = None) -> AppInstallReply:
        # No timeout: installing requirements with pip may take minutes on a real VM.
        fields: dict[str, Any] = {"app": app, "digest": digest}
        if archive is not None:
            fields["archive"] = archive
        return self._call("app_install", AppInstallReply, timeout=None, **fields)

    def coldstart(self, app: str) -> float:
        """Seconds this agent takes to start a fresh worker for ``app``."""
        return self._call("coldstart", SecondsReply, timeout=None, app=app).seconds

    def rawtcp_serve(self, size: int) -> int:
        """Yardstick: serve ``size`` raw bytes once; the port to pull them from."""
        return self._call("rawtcp_serve", RawTcpServeReply, size=size).port

    def rawtcp_pull(self, size: int, host: str, port: int, *, to_file: bool = False) -> float:
        """Yardstick: pull ``size`` raw bytes from ``host:port``; its seconds."""
        return self._call("rawtcp_pull", SecondsReply, timeout=None, size=size, host=host, port=port,
                          to_file=to_file).seconds

    def diskbench(self, size: int) -> DiskbenchReply:
        return self._call("diskbench", DiskbenchReply, timeout=None, size=size)

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
