"""The fetch cache: an input made local on this VM by its passing method, verified, once.

How bytes get here is the passing method's (:mod:`sonic.runtime.methods`): ``local`` inputs
are read in place (VM-Storage), ``direct`` ones pulled from the producer's agent, ``remote``
ones downloaded from S3; a partition of a packed object is fetched by range.
Concurrent runs needing the same object wait on one fetch (a lock per object), and a copy
already here is used again once it verifies against its checksum. Every failure is a
:class:`RequestError` of kind ``fetch`` whose ``cause`` (corrupt, missing, unreachable, local),
``input`` and ``source`` tell the coordinator exactly what to regenerate.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from sonic.errors import CorruptObjectError, MissingObjectError, TransportError
from sonic.runtime.agent.request import RequestError
from sonic.runtime.client import AgentClient, RemoteCallError, Timeouts
from sonic.runtime.methods import RUNTIME_METHODS, FetchRequest, RuntimeMethod
from sonic.runtime.objects import Checksums, ObjectStore, check_key, file_checksum
from sonic.runtime.remote import RemoteStore

log = logging.getLogger("sonic.agent")


class Fetcher:
    """Inputs of this VM's runs: fetch, verify, remember (see the module docstring)."""

    def __init__(self, name: str, secret: bytes, store: ObjectStore, checksums: Checksums,
                 remote: RemoteStore | None) -> None:
        self.name = name
        self.secret = secret
        self.store = store
        self.checksums = checksums
        self.remote = remote
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._peers: dict[tuple[str, int, Timeouts], AgentClient] = {}
        self._lock = threading.Lock()

    def peer(self, name: str, host: str, port: int, timeouts: Timeouts) -> AgentClient:
        """A pooled client of another agent (one per address and deadlines)."""
        with self._lock:
            client = self._peers.get((host, port, timeouts))
            if client is None:
                client = self._peers[(host, port, timeouts)] = AgentClient(host, port, self.secret, name, timeouts)
            return client

    def _object_lock(self, job: str, key: str) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault((job, key), threading.Lock())

    def forget_job(self, job: str) -> None:
        """The job ended here: its fetch locks go (its objects are deleted by the caller)."""
        with self._lock:
            for k in [k for k in self._locks if k[0] == job]:
                del self._locks[k]

    def remember(self, job: str, key: str, path: Path, size: int, checksum: str) -> None:
        self.checksums.remember(job, key, path, size, checksum)

    def close(self) -> None:
        with self._lock:
            peers = list(self._peers.values())
        for client in peers:
            client.close()

    def _method(self, wire: object) -> RuntimeMethod:
        """The registered method an input names (a request naming no such method, or one
        needing the remote storage this agent lacks, is refused)."""
        try:
            hooks = RUNTIME_METHODS.by_wire(wire)[1] if isinstance(wire, str) else None
        except KeyError:
            hooks = None
        if hooks is None:
            raise RequestError(f"unknown passing method {wire!r}", "request")
        if hooks.needs_remote and self.remote is None:
            raise RequestError("this agent has no remote storage configured", "request")
        return hooks

    def ensure_local(self, job: str, item: dict[str, Any], timeouts: Timeouts = Timeouts()) -> tuple[Path, float]:
        """Make input ``item`` available on this VM, verified against its checksum; return its
        path and the seconds spent moving it. A copy that does not verify is never used."""
        key = check_key(f"{item['stage']}/{item['instance']}/{item['name']}")
        path = self.store.path(job, key)
        size, checksum = int(item["size"]), str(item.get("checksum") or "")
        wire = item.get("method", "local")
        source = str(item.get("vm") or self.name) if wire != "remote" else "s3"

        def fail(cause: str, why: str) -> RequestError:
            return RequestError(f"input {key} ({wire} from {source}) {why} on VM {self.name}", "fetch",
                                cause=cause, input=key, source=source)

        # The request's own faults first: inside the try below, an AgentRequestError is a peer's answer.
        method = self._method(wire)
        ranged = bool(item.get("pack"))
        offset = int(item.get("offset") or 0) if ranged else None
        if offset is not None and offset < 0:
            raise RequestError("input offset must be non-negative", "request")
        with self._object_lock(job, key):
            if path.is_file() and not path.is_symlink():
                if not checksum or self.checksums.verify(job, key, path, checksum):
                    return path, 0.0
                if method.in_place and not ranged:
                    # Read in place (VM-Storage): the producer's own copy is bad; only re-running
                    # the producer can help, so say so rather than hand it to the function.
                    raise fail("corrupt", "is corrupt (checksum mismatch)")
                path.unlink()  # a stale or damaged copy of a fetched object (or partition): fetch it afresh
            elif method.in_place and not ranged:
                raise fail("missing", "is not there")
            source_key = check_key(f"{item['stage']}/{item['instance']}/{item['pack']}") if ranged else key
            req = FetchRequest(job, source_key, path, size, checksum or None, offset, item, timeouts)
            try:
                seconds = self._fetch(method, req)
            except CorruptObjectError as exc:
                raise fail("corrupt", f"failed verification: {exc}") from None
            except (MissingObjectError, RemoteCallError) as exc:
                raise fail("missing", f"could not be had: {exc}") from None
            except TransportError as exc:
                raise fail("unreachable", f"could not be fetched: {exc}") from None
            except OSError as exc:
                # Our own disk (full, read-only): this VM's problem, not the object's.
                raise fail("local", f"could not be stored: {exc}") from None
            self.remember(job, key, path, size, checksum or file_checksum(path))
            return path, seconds

    def _fetch(self, method: RuntimeMethod, req: FetchRequest) -> float:
        """Run the method's fetch, verified; return the seconds spent. Bytes damaged in transit
        are fetched once more before the object is declared corrupt (a bad pack on this VM, or
        a bad producer copy, is only cured by re-running its producer)."""
        t0 = time.perf_counter()
        req.path.parent.mkdir(parents=True, exist_ok=True)
        attempts = 1 if method.in_place else 2
        for attempt in range(attempts):
            try:
                method.fetch(self, req)
                if not method.verifies_in_transit and req.checksum and file_checksum(req.path) != req.checksum:
                    req.path.unlink(missing_ok=True)
                    raise CorruptObjectError(f"{req.key} does not match its checksum")
                return time.perf_counter() - t0
            except CorruptObjectError as exc:
                if attempt == attempts - 1:
                    raise
                log.warning("job %s: %s; fetching it again", req.job, exc)
        raise AssertionError("unreachable: the loop returns or raises")
