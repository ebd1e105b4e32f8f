"""The fetch cache: an input made local on this VM by its passing method, verified, once.

``local`` inputs are read in place (VM-Storage), ``direct`` ones pulled from the producer's
agent, ``remote`` ones downloaded from S3; a partition of a packed object is fetched by range.
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
from sonic.runtime.methods import RUNTIME_METHODS
from sonic.runtime.objects import Checksums, ObjectStore, check_key, copy_range, file_checksum
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

    def _check_method(self, method: object, *, ranged: bool) -> RemoteStore | None:
        """Refuse a passing method this agent cannot fetch by; return the remote store for
        ``remote`` (``local`` needs no fetch unless the input is one partition of a pack)."""
        if method not in (("local", "direct", "remote") if ranged else ("direct", "remote")):
            if ranged or not isinstance(method, str) or not _registered_extra(method):
                raise RequestError(f"unknown passing method {method!r}", "request")
        if method == "remote" and self.remote is None:
            raise RequestError("this agent has no remote storage configured", "request")
        return self.remote

    def ensure_local(self, job: str, item: dict[str, Any], timeouts: Timeouts = Timeouts()) -> tuple[Path, float]:
        """Make input ``item`` available on this VM, verified against its checksum; return its
        path and the seconds spent moving it. A copy that does not verify is never used."""
        key = check_key(f"{item['stage']}/{item['instance']}/{item['name']}")
        path = self.store.path(job, key)
        size, checksum = int(item["size"]), str(item.get("checksum") or "")
        method = item.get("method", "local")
        source = str(item.get("vm") or self.name) if method != "remote" else "s3"

        def fail(cause: str, why: str) -> RequestError:
            return RequestError(f"input {key} ({method} from {source}) {why} on VM {self.name}", "fetch",
                                cause=cause, input=key, source=source)

        ranged = bool(item.get("pack"))
        with self._object_lock(job, key):
            if path.is_file() and not path.is_symlink():
                if not checksum or self.checksums.verify(job, key, path, checksum):
                    return path, 0.0
                if method == "local" and not ranged:
                    # In place (VM-Storage): the producer's own copy is bad; only re-running the
                    # producer can help, so say so rather than hand it to the function.
                    raise fail("corrupt", "is corrupt (checksum mismatch)")
                path.unlink()  # a stale or damaged copy of a fetched object (or partition): fetch it afresh
            elif method == "local" and not ranged:
                raise fail("missing", "is not there")
            # The request's own faults first: inside the try, an AgentRequestError is a peer's answer.
            remote = self._check_method(method, ranged=ranged)
            offset = int(item.get("offset") or 0)
            if ranged and offset < 0:
                raise RequestError("input offset must be non-negative", "request")
            try:
                if ranged:
                    seconds = self._fetch_partition(job, item, path, size, checksum, method, timeouts)
                elif method == "direct":
                    peer = self.peer(str(item["vm"]), str(item["host"]), int(item["port"]), timeouts)
                    seconds = peer.get_to_file(job, key, path, size=size, checksum=checksum or None)
                elif method != "remote":  # a registered extra method (_check_method): its own fetch
                    seconds = RUNTIME_METHODS.by_wire(method)[1].fetch(job, key, item, path)
                    if checksum and file_checksum(path) != checksum:
                        path.unlink(missing_ok=True)
                        raise CorruptObjectError(f"{key} does not match its checksum")
                else:
                    assert remote is not None  # _check_method: remote storage is configured
                    seconds = remote.download(f"{job}/{key}", path, size=size, checksum=checksum or None)
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

    def _fetch_partition(self, job: str, item: dict[str, Any], path: Path, size: int, checksum: str, method: str,
                         timeouts: Timeouts) -> float:
        """Make one partition of a packed object a file of its own at ``path``, verified: out of
        the pack in the kernel when the pack is on this VM, else a ranged pull or ranged GET.
        A partition that fails its checksum in transit is fetched once more before the object
        is declared corrupt (a bad pack is only cured by re-running its producer)."""
        pack_key = check_key(f"{item['stage']}/{item['instance']}/{item['pack']}")
        offset = int(item.get("offset") or 0)  # checked non-negative by ensure_local
        t0 = time.perf_counter()
        path.parent.mkdir(parents=True, exist_ok=True)
        attempts = 1 if method == "local" else 2
        for attempt in range(attempts):
            try:
                if method == "local":
                    pack_path = self.store.path(job, pack_key)
                    if not pack_path.is_file() or pack_path.is_symlink():
                        raise MissingObjectError(f"pack {pack_key} is not on this VM")
                    tmp = path.with_name(path.name + ".part")
                    copy_range(pack_path, offset, size, tmp)
                    if tmp.stat().st_size != size or (checksum and file_checksum(tmp) != checksum):
                        tmp.unlink(missing_ok=True)
                        raise CorruptObjectError(f"partition at {offset} of {pack_key} does not match its checksum")
                    tmp.rename(path)
                elif method == "direct":
                    peer = self.peer(str(item["vm"]), str(item["host"]), int(item["port"]), timeouts)
                    peer.get_to_file(job, pack_key, path, size=size, checksum=checksum or None, offset=offset)
                else:  # remote (ensure_local checked the method and that remote storage is configured)
                    assert self.remote is not None
                    self.remote.download(f"{job}/{pack_key}", path, size=size, checksum=checksum or None,
                                         offset=offset)
                return time.perf_counter() - t0
            except CorruptObjectError as exc:
                if attempt == attempts - 1:
                    raise
                log.warning("job %s: %s; fetching the partition again", job, exc)
        raise AssertionError("unreachable: the loop returns or raises")


def _registered_extra(wire: str) -> bool:
    """A method registered beyond the three built-ins (sonic.runtime.methods), fetched by its own hook."""
    try:
        ident, _ = RUNTIME_METHODS.by_wire(wire)
    except KeyError:
        return False
    return ident.builtin is None
