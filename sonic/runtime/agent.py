"""The agent: one per VM. Runs stage instances in warm workers, stores and serves objects.

Threaded TCP server (one thread per connection; the work is blocking I/O, S3 calls through
boto3 and waiting on worker pipes, so threads are the simple fit). Every connection must pass
the HMAC handshake of :mod:`sonic.runtime.protocol` before a single request is read; failures
are logged with the peer address and the connection is closed.

Requests (msgpack maps, ``op`` selects):

- ``ping``: version, name, slots, pid, worker pids (the coordinator's heartbeat).
- ``warm {app}``: start the app's workers now (imports done once, ahead of the first run).
- ``run {job, app, stage, index, num_instances, key, inputs[], upload, [timeout_s],
  [peer_timeouts], [partitions]}``: fetch inputs by their method (``local``: already on this VM, read in
  place; ``direct``: pull from the producer's agent; ``remote``: download from S3), verifying
  every one against its checksum, run in a warm worker writing straight into the object store
  (killed after ``timeout_s``), checksum outputs, upload them to S3 if asked. An input that
  cannot be had fails the run with ``kind: fetch`` and says why (``cause``: corrupt, missing,
  unreachable, local), which object (``input``) and from where (``source``). With ``pack``
  true the instance's outputs are stored as one packed object (``_packed`` + index; see
  ``objects.pack_outputs``) and its reply lists it with ``partitions [[name, offset, length,
  checksum]]``; an input item with ``pack``/``offset`` is one partition of such an object,
  fetched by range (local: copied out of the pack in the kernel; direct: ranged ``get``;
  remote: ranged GET) and verified against the partition's checksum.
- ``get {job, key, [offset, length]}``: header then the raw bytes via ``sendfile`` (zero-copy);
  with ``offset``/``length`` only that range (one partition of a packed output, with its own
  checksum in the header).
- ``put {job, key, size, checksum}`` + raw bytes: store an object.
- ``drop {job}``: delete the job's objects.

Run as ``python -m sonic.runtime.agent --name vm0 --bind 127.0.0.1 --port 0 --data-dir DIR
--secret-file FILE --slots 2 [--s3-endpoint URL --s3-bucket B --s3-region R]``; it writes
``DIR/agent.json`` (name, pid, host, port, version, started) once it listens. It binds the
cluster interface given by ``--bind`` and refuses a wildcard address (0.0.0.0, ::) unless
``--allow-any-interface`` says so explicitly.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import select
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sonic import __version__
from sonic.errors import (
    AuthenticationError,
    CorruptObjectError,
    MissingObjectError,
    SonicError,
    TransportError,
    UserInputError,
)
from sonic.runtime import appcode, protocol
from sonic.runtime.client import AgentClient, RemoteCallError, Timeouts
from sonic.runtime.objects import (
    BadKeyError,
    Checksums,
    ObjectStore,
    check_job,
    check_key,
    copy_range,
    file_checksum,
    pack_outputs,
    range_checksum,
)
from sonic.runtime.remote import RemoteSettings, RemoteStore
from sonic.runtime.worker import read_frame, write_frame

log = logging.getLogger("sonic.agent")


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


class RequestError(SonicError):
    """A request that failed; ``kind`` (instance, fetch, request) and, for fetches, ``cause``,
    ``input`` and ``source`` travel back in the reply (see the module docstring)."""

    def __init__(self, message: str, kind: str = "request", *, cause: str = "", input: str | None = None,
                 source: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.cause = cause
        self.input = input
        self.source = source

    def reply(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"ok": False, "kind": self.kind, "error": str(self)}
        if self.cause:
            doc.update(cause=self.cause, input=self.input, source=self.source)
        return doc


# ---------------------------------------------------------------------------- workers
class Worker:
    """A warm worker process for one app (see :mod:`sonic.runtime.worker`)."""

    def __init__(self, app: str, log_file: Path, timeout_s: float) -> None:
        self.app = app
        self.last_used = time.monotonic()
        self.cancelled: str | None = None   # why it was killed from outside (job cancelled, lease expired)
        t0 = time.perf_counter()
        log_fh = open(log_file, "ab")
        # Its own process group (in the agent's session): a timed-out instance is killed with
        # everything it started, and `cluster down` still finds workers of a killed agent.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sonic.runtime.worker", app],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_fh, process_group=0,
        )
        log_fh.close()
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in, self._out = self.proc.stdin, self.proc.stdout
        hello = self._read(timeout_s, f"starting a worker for {app!r}")
        if not hello.get("ok"):
            self.stop()
            raise RequestError(f"cannot load app {app!r} on this VM: {hello.get('error')}", "instance")
        self.start_s = time.perf_counter() - t0

    def _read(self, timeout_s: float, what: str, watch: socket.socket | None = None) -> dict[str, Any]:
        # The worker answers on a pipe; a dead worker shows up as EOF, a hung one as a timeout.
        # Nothing is ever buffered between frames (one reply per request), so select() on the
        # pipe sees exactly whether the next reply has started to arrive. ``watch`` is the
        # requester's connection: if it closes (coordinator killed, or it gave up on this VM)
        # nobody will take the result, so the instance is killed and its slot freed at once.
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise RequestError(f"{what} exceeded its stage timeout of {timeout_s:g}s and was killed (raise the "
                                   "limit with @app.stage(timeout_s=...) or `sonic run --stage-timeout`)", "timeout")
            ready, _, _ = select.select([self._out] + ([watch] if watch is not None else []), [], [], left)
            if self._out in ready or not ready:
                if ready:
                    break
                continue
            if watch is not None and _peer_closed(watch):
                self.cancelled = self.cancelled or "its coordinator closed the connection"
                self.kill()
                raise RequestError(f"{what} was cancelled: {self.cancelled}", "cancelled")
            watch = None  # unexpected bytes from the requester: stop watching, keep waiting
        doc = read_frame(self._out)
        if doc is None:
            code = self.proc.wait()
            if self.cancelled:
                raise RequestError(f"{what} was cancelled: {self.cancelled}", "cancelled")
            raise RequestError(f"worker for {self.app!r} died (exit code {code}; out of memory?)", "instance")
        return doc

    def run(self, request: dict[str, Any], timeout_s: float, watch: socket.socket | None = None) -> dict[str, Any]:
        try:
            write_frame(self._in, request)
        except BrokenPipeError:
            raise RequestError(f"worker for {self.app!r} is gone (exit code {self.proc.poll()})", "instance") from None
        return self._read(timeout_s, f"stage {request.get('stage')!r} instance {request.get('index')}", watch)

    def cancel(self, reason: str) -> None:
        """Kill the instance it is running from another thread; its run reports ``reason``."""
        self.cancelled = reason
        self.kill()

    def kill(self) -> None:
        """SIGKILL the worker and whatever it started (its process group)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return  # already gone
        self.proc.wait()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class WorkerPool:
    """Warm workers per app. A run borrows one, spawning it if none is idle, and holds one of
    ``slots`` permits while it runs. Warming starts idle workers without taking permits, so a
    warm can never wait for (or block) a run, and two warms cannot deadlock. At most
    ``max_idle`` idle workers are kept (least recently used stopped first) and any idle longer
    than ``idle_s`` is stopped by :meth:`reap`."""

    def __init__(self, slots: int, log_file: Path, start_timeout_s: float, *, idle_s: float = 300.0,
                 max_idle: int = 0) -> None:
        self.slots = slots
        self.log_file = log_file
        self.start_timeout_s = start_timeout_s
        self.idle_s = idle_s
        self.max_idle = max_idle or 2 * slots
        self._idle: dict[str, list[Worker]] = {}
        self._all: list[Worker] = []
        self._warming: dict[str, int] = {}
        self._lock = threading.Lock()
        self._sem = threading.BoundedSemaphore(slots)

    def acquire(self, app: str, wait_s: float) -> tuple[Worker, float | None]:
        """Return a worker and, if it had to be started (cold), the seconds that took."""
        if not self._sem.acquire(timeout=wait_s):
            raise RequestError(f"no free slot within {wait_s:g}s (all {self.slots} slots busy)", "instance")
        with self._lock:
            idle = self._idle.setdefault(app, [])
            while idle:
                worker = idle.pop()
                if worker.alive:
                    return worker, None
                self._all.remove(worker)
        try:
            worker = Worker(app, self.log_file, self.start_timeout_s)
        except BaseException:
            self._sem.release()
            raise
        with self._lock:
            self._all.append(worker)
        return worker, worker.start_s

    def release(self, worker: Worker) -> None:
        with self._lock:
            if worker.alive:
                worker.last_used = time.monotonic()
                self._idle.setdefault(worker.app, []).append(worker)
            elif worker in self._all:
                self._all.remove(worker)
            surplus = self._trim_locked()
        self._sem.release()
        for extra in surplus:
            extra.stop()

    def warm(self, app: str) -> int:
        """Have up to ``slots`` idle workers of ``app`` ready; return how many are idle now."""
        with self._lock:
            have = sum(1 for w in self._idle.get(app, []) if w.alive) + self._warming.get(app, 0)
            need = max(0, min(self.slots, self.max_idle) - have)
            self._warming[app] = self._warming.get(app, 0) + need
        try:
            for _ in range(need):
                worker = Worker(app, self.log_file, self.start_timeout_s)
                with self._lock:
                    self._all.append(worker)
                    self._idle.setdefault(app, []).append(worker)
        finally:
            with self._lock:
                self._warming[app] -= need
                surplus = self._trim_locked()
                ready = sum(1 for w in self._idle.get(app, []) if w.alive)
        for extra in surplus:
            extra.stop()
        return ready

    def _trim_locked(self) -> list[Worker]:
        """Take the least recently used idle workers beyond ``max_idle`` out of the pool."""
        idle = sorted((w for ws in self._idle.values() for w in ws), key=lambda w: w.last_used)
        surplus = idle[: max(0, len(idle) - self.max_idle)]
        for worker in surplus:
            self._idle[worker.app].remove(worker)
            self._all.remove(worker)
        return surplus

    def reap(self) -> int:
        """Stop idle workers unused for ``idle_s`` (and dead ones); return how many."""
        now = time.monotonic()
        with self._lock:
            stale = [w for ws in self._idle.values() for w in ws if not w.alive or now - w.last_used >= self.idle_s]
            for worker in stale:
                self._idle[worker.app].remove(worker)
                self._all.remove(worker)
        for worker in stale:
            worker.stop()
        return len(stale)

    def idle_count(self) -> int:
        with self._lock:
            return sum(len(ws) for ws in self._idle.values())

    def retire(self, stale: Callable[[str], bool]) -> int:
        """Stop the idle workers whose app key is ``stale`` (an old version of shipped code)."""
        with self._lock:
            gone = [w for key, ws in self._idle.items() if stale(key) for w in ws]
            for worker in gone:
                self._idle[worker.app].remove(worker)
                self._all.remove(worker)
        for worker in gone:
            worker.stop()
        return len(gone)

    def stop(self) -> None:
        with self._lock:
            workers, self._all, self._idle = self._all, [], {}
        for worker in workers:
            worker.stop()

    def pids(self) -> list[int]:
        with self._lock:
            return [w.proc.pid for w in self._all if w.alive]


# ---------------------------------------------------------------------------- agent
class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.store = ObjectStore(config.data_dir / "objects")
        self.pool = WorkerPool(config.slots, config.data_dir / "workers.log", config.worker_start_timeout_s,
                               idle_s=config.idle_worker_s, max_idle=config.max_idle_workers)
        self.remote = RemoteStore(config.remote) if config.remote else None
        self.checksums = Checksums(trust_unchanged=config.verify_local == "changed")
        self._fetch_locks: dict[tuple[str, str], threading.Lock] = {}
        self._peers: dict[tuple[str, int, Timeouts], AgentClient] = {}
        self._lock = threading.Lock()
        self.busy = 0
        self._running: dict[str, set[Worker]] = {}     # job -> workers running its instances
        self._leases: dict[str, float] = {}            # job -> monotonic deadline of its lease
        self._ended: dict[str, tuple[float, str]] = {}  # job -> (when, why) it was cancelled/expired
        self._stop = threading.Event()
        self._housekeeper = threading.Thread(target=self._housekeeping, name="sonic-housekeeping", daemon=True)

    def start(self) -> Agent:
        self._housekeeper.start()
        return self

    # ------------------------------------------------------------------ jobs: leases, cancel
    def _check_live(self, job: str) -> None:
        with self._lock:
            ended = self._ended.get(job)
        if ended is not None:
            raise RequestError(f"job {job} was ended on VM {self.config.name} ({ended[1]}); start a new run",
                               "cancelled")

    def _renew(self, job: str, ttl_s: float) -> None:
        with self._lock:
            self._leases[job] = max(self._leases.get(job, 0.0), time.monotonic() + ttl_s)

    def end_job(self, job: str, reason: str, *, remote: bool) -> int:
        """Cancel ``job`` here: refuse it from now on, kill its running instances (their slots
        free at once), delete its objects (and its S3 prefix if ``remote``). Returns how many
        instances were killed."""
        with self._lock:
            self._ended[job] = (time.monotonic(), reason)
            self._leases.pop(job, None)
            workers = list(self._running.get(job, ()))
            for k in [k for k in self._fetch_locks if k[0] == job]:
                del self._fetch_locks[k]
        for worker in workers:
            worker.cancel(reason)
        self.store.drop_job(job)
        self.checksums.forget_job(job)
        if remote and self.remote is not None:
            try:
                self.remote.delete_prefix(f"{job}/")
            except TransportError as exc:
                log.warning("job %s: could not delete its S3 prefix: %s", job, exc)
        if workers:
            log.info("job %s ended (%s): killed %d running instance(s)", job, reason, len(workers))
        return len(workers)

    def _housekeeping(self) -> None:
        """Expire leases (a coordinator that stopped renewing is gone: drop its job's work and
        objects, local and S3) and stop idle workers past their idle time."""
        while not self._stop.wait(self.config.housekeeping_s):
            now = time.monotonic()
            with self._lock:
                expired = [job for job, deadline in self._leases.items() if deadline < now]
                # Tombstones are kept a day: long enough for any straggling request of the job.
                for job in [j for j, (when, _) in self._ended.items() if now - when > 86400]:
                    del self._ended[job]
            for job in expired:
                log.warning("job %s: lease expired; dropping its work and objects", job)
                self.end_job(job, "its lease expired: the coordinator stopped renewing it", remote=True)
            reaped = self.pool.reap()
            if reaped:
                log.info("stopped %d idle worker(s)", reaped)

    # ------------------------------------------------------------------ helpers
    def _peer(self, name: str, host: str, port: int, timeouts: Timeouts) -> AgentClient:
        with self._lock:
            client = self._peers.get((host, port, timeouts))
            if client is None:
                client = self._peers[(host, port, timeouts)] = AgentClient(host, port, self.config.secret, name,
                                                                           timeouts)
            return client

    def _fetch_lock(self, job: str, key: str) -> threading.Lock:
        with self._lock:
            return self._fetch_locks.setdefault((job, key), threading.Lock())

    def _remember(self, job: str, key: str, path: Path, size: int, checksum: str) -> None:
        self.checksums.remember(job, key, path, size, checksum)

    def ensure_local(self, job: str, item: dict[str, Any], timeouts: Timeouts = Timeouts()) -> tuple[Path, float]:
        """Make input ``item`` available on this VM, verified against its checksum; return its
        path and the seconds spent moving it. A copy that does not verify is never used."""
        key = check_key(f"{item['stage']}/{item['instance']}/{item['name']}")
        path = self.store.path(job, key)
        size, checksum = int(item["size"]), str(item.get("checksum") or "")
        method = item.get("method", "local")
        source = str(item.get("vm") or self.config.name) if method != "remote" else "s3"

        def fail(cause: str, why: str) -> RequestError:
            return RequestError(f"input {key} ({method} from {source}) {why} on VM {self.config.name}", "fetch",
                                cause=cause, input=key, source=source)

        ranged = bool(item.get("pack"))
        with self._fetch_lock(job, key):
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
            try:
                if ranged:
                    seconds = self._fetch_partition(job, item, path, size, checksum, method, timeouts)
                elif method == "direct":
                    peer = self._peer(str(item["vm"]), str(item["host"]), int(item["port"]), timeouts)
                    seconds = peer.get_to_file(job, key, path, size=size, checksum=checksum or None)
                elif method == "remote":
                    if self.remote is None:
                        raise RequestError("this agent has no remote storage configured", "request")
                    seconds = self.remote.download(f"{job}/{key}", path, size=size, checksum=checksum or None)
                else:
                    raise RequestError(f"unknown passing method {method!r}", "request")
            except CorruptObjectError as exc:
                raise fail("corrupt", f"failed verification: {exc}") from None
            except (MissingObjectError, RemoteCallError) as exc:
                raise fail("missing", f"could not be had: {exc}") from None
            except TransportError as exc:
                raise fail("unreachable", f"could not be fetched: {exc}") from None
            except OSError as exc:
                # Our own disk (full, read-only): this VM's problem, not the object's.
                raise fail("local", f"could not be stored: {exc}") from None
            self._remember(job, key, path, size, checksum or file_checksum(path))
            return path, seconds

    def _fetch_partition(self, job: str, item: dict[str, Any], path: Path, size: int, checksum: str, method: str,
                         timeouts: Timeouts) -> float:
        """Make one partition of a packed object a file of its own at ``path``, verified: out of
        the pack in the kernel when the pack is on this VM, else a ranged pull or ranged GET.
        A partition that fails its checksum in transit is fetched once more before the object
        is declared corrupt (a bad pack is only cured by re-running its producer)."""
        pack_key = check_key(f"{item['stage']}/{item['instance']}/{item['pack']}")
        offset = int(item.get("offset") or 0)
        if offset < 0:
            raise RequestError("input offset must be non-negative", "request")
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
                    peer = self._peer(str(item["vm"]), str(item["host"]), int(item["port"]), timeouts)
                    peer.get_to_file(job, pack_key, path, size=size, checksum=checksum or None, offset=offset)
                elif method == "remote":
                    if self.remote is None:
                        raise RequestError("this agent has no remote storage configured", "request")
                    self.remote.download(f"{job}/{pack_key}", path, size=size, checksum=checksum or None,
                                         offset=offset)
                else:
                    raise RequestError(f"unknown passing method {method!r}", "request")
                return time.perf_counter() - t0
            except CorruptObjectError as exc:
                if attempt == attempts - 1:
                    raise
                log.warning("job %s: %s; fetching the partition again", job, exc)
        raise AssertionError("unreachable: the loop returns or raises")

    # ------------------------------------------------------------------ ops
    def op_ping(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "version": __version__, "name": self.config.name, "slots": self.config.slots,
                "memory_mb": self.config.memory_mb, "pid": os.getpid(), "busy": self.busy,
                "workers": self.pool.pids(), "idle_workers": self.pool.idle_count(), "leases": self.leases()}

    def leases(self) -> list[str]:
        with self._lock:
            return sorted(self._leases)

    def op_warm(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "workers": self.pool.warm(_str(req, "app"))}

    def op_lease(self, req: dict[str, Any]) -> dict[str, Any]:
        job = check_job(req.get("job"))
        ttl = _opt_seconds(req, "ttl_s")
        if ttl is None:
            raise RequestError("lease: field 'ttl_s' is required")
        self._check_live(job)
        self._renew(job, ttl)
        return {"ok": True}

    def op_cancel(self, req: dict[str, Any]) -> dict[str, Any]:
        job = check_job(req.get("job"))
        reason = req.get("reason") if isinstance(req.get("reason"), str) else "cancelled by its coordinator"
        return {"ok": True, "killed": self.end_job(job, str(reason)[:200], remote=False)}

    def op_gc(self, req: dict[str, Any]) -> dict[str, Any]:
        """Delete the objects of every job with no live lease and nothing running here."""
        with self._lock:
            keep = set(self._leases) | {job for job, ws in self._running.items() if ws}
        removed = []
        for entry in sorted(self.store.root.iterdir()) if self.store.root.exists() else []:
            if entry.name not in keep and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
                self.checksums.forget_job(entry.name)
                removed.append(entry.name)
        return {"ok": True, "removed": removed, "live": sorted(keep)}

    def op_drop(self, req: dict[str, Any]) -> dict[str, Any]:
        job = check_job(req.get("job"))
        self.store.drop_job(job)
        self.checksums.forget_job(job)
        with self._lock:
            for k in [k for k in self._fetch_locks if k[0] == job]:
                del self._fetch_locks[k]
        return {"ok": True}

    def op_run(self, req: dict[str, Any], sock: socket.socket | None = None) -> dict[str, Any]:
        job = check_job(req.get("job"))
        self._check_live(job)
        lease_s = _opt_seconds(req, "lease_s")
        if lease_s is not None:
            self._renew(job, lease_s)
        app, stage = _str(req, "app"), _str(req, "stage")
        index = _int(req, "index")
        inputs = req.get("inputs")
        if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
            raise RequestError("run: inputs must be a list of maps")
        num_instances = _int(req, "num_instances")
        partitions = _partitions(req)
        pack = req.get("pack") is True
        timeout_s = _opt_seconds(req, "timeout_s") or self.config.stage_timeout_s
        peer_timeouts = _timeouts(req.get("peer_timeouts"))
        out_dir = self.store.instance_dir(job, stage, index)  # validates stage before any work
        fetch_by_stage: dict[str, float] = {}
        paths: list[str] = []
        for item in inputs:
            path, seconds = self.ensure_local(job, item, peer_timeouts)
            paths.append(str(path))
            src = str(item["stage"])
            fetch_by_stage[src] = fetch_by_stage.get(src, 0.0) + seconds
        if out_dir.exists():  # a retry on this VM starts clean
            for entry in out_dir.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        scratch = self.config.data_dir / "scratch" / f"{job}-{stage}-{index}-{threading.get_ident()}"
        worker, cold_s = self.pool.acquire(app, self.config.slot_wait_s)
        with self._lock:
            self.busy += 1
            self._running.setdefault(job, set()).add(worker)
        try:
            self._check_live(job)  # cancelled while its inputs were fetched or it waited for a slot
            reply = worker.run({
                "stage": stage, "index": index, "num_instances": num_instances,
                "key": req.get("key"), "inputs": inputs, "paths": paths, "partitions": partitions,
                "output_dir": str(out_dir), "scratch_dir": str(scratch), "vm": self.config.name,
            }, timeout_s, sock)
        except RequestError as exc:
            raise RequestError(f"{exc} on VM {self.config.name}", exc.kind) from None
        finally:
            with self._lock:
                self.busy -= 1
                running = self._running.get(job)
                if running is not None:
                    running.discard(worker)
                    if not running:
                        del self._running[job]
                ended = job in self._ended
            self.pool.release(worker)
            if ended:  # inputs fetched or outputs written after the job was dropped: drop them too
                self.store.drop_job(job)
        if not reply.get("ok") and reply.get("bad_input"):
            raise RequestError(f"{reply.get('error')}", "input")
        if not reply.get("ok"):
            raise RequestError(f"{reply.get('error')} on VM {self.config.name}", "instance")
        outputs: list[dict[str, Any]] = []
        upload_s = 0.0
        written = [(str(name), int(size)) for name, size in reply["outputs"]]
        if pack and written:
            try:
                packed = pack_outputs(out_dir, [name for name, _ in written])
            except ValueError as exc:
                raise RequestError(f"{exc} (stage {stage!r})", "instance") from None
            key = f"{stage}/{index}/{packed.name}"
            self._remember(job, key, out_dir / packed.name, packed.size, packed.checksum)
            self.checksums.remember_pack(job, key, packed)
            outputs.append({"name": packed.name, "size": packed.size, "checksum": packed.checksum,
                            "partitions": [[p.name, p.offset, p.length, p.checksum] for p in packed.partitions]})
        else:
            for name, size in written:
                checksum = file_checksum(out_dir / name)
                self._remember(job, f"{stage}/{index}/{name}", out_dir / name, size, checksum)
                outputs.append({"name": name, "size": size, "checksum": checksum})
        for out in outputs:
            name = out["name"]
            key, checksum = f"{stage}/{index}/{name}", out["checksum"]
            if req.get("upload"):
                if self.remote is None:
                    raise RequestError("plan needs remote storage but this agent has none configured")
                try:
                    upload_s += self.remote.upload(out_dir / name, f"{job}/{key}", checksum)
                except TransportError as exc:
                    # The instance ran but its output did not reach S3: run it again (the
                    # remote layer already retried with backoff).
                    raise RequestError(f"{exc} on VM {self.config.name}", "instance") from None
        metrics = reply["metrics"]
        metrics["cold"] = cold_s is not None
        metrics["passing_s"] = sum(fetch_by_stage.values()) + upload_s
        return {"ok": True, "metrics": metrics, "outputs": outputs, "fetch_by_stage": fetch_by_stage,
                "upload_s": upload_s, "cold_start_s": cold_s or 0.0}

    def op_fetch(self, req: dict[str, Any]) -> dict[str, Any]:
        """Make one object local by its method (data-plane benchmark and calibration)."""
        job = check_job(req.get("job"))
        item = req.get("item")
        if not isinstance(item, dict):
            raise RequestError("fetch: item must be a map")
        path, seconds = self.ensure_local(job, item)
        return {"ok": True, "seconds": seconds, "path": str(path), "inode": path.stat().st_ino}

    def op_push(self, req: dict[str, Any]) -> dict[str, Any]:
        """Upload one local object to remote storage (data-plane benchmark and calibration)."""
        job, key = check_job(req.get("job")), check_key(req.get("key"))
        if self.remote is None:
            raise RequestError("this agent has no remote storage configured")
        record = self.checksums.get(job, key)
        stored = self.store.describe(job, key, record.checksum if record else None)
        try:
            return {"ok": True, "seconds": self.remote.upload(stored.path, f"{job}/{key}", stored.checksum)}
        except TransportError as exc:  # S3's failure, not the requester's: answer, keep the connection
            raise RequestError(str(exc), "fetch") from None

    def op_rawtcp_serve(self, req: dict[str, Any]) -> dict[str, Any]:
        """Yardstick: serve SIZE bytes once on a fresh port with sendfile, no protocol at all."""
        size = _int(req, "size")
        listener = socket.create_server((self.config.bind, 0))
        listener.settimeout(self.config.handshake_timeout_s)
        blob = self.config.data_dir / "rawtcp.bin"
        if not blob.exists() or blob.stat().st_size < size:
            with open(blob, "wb") as fh:
                fh.truncate(size)  # sparse zeros: the page cache serves them, no disk in the way

        def serve_once() -> None:
            try:
                conn, _ = listener.accept()
                with conn, open(blob, "rb") as fh:
                    conn.sendfile(fh, 0, size)
            except OSError as exc:
                log.warning("raw TCP yardstick: %s", exc)
            finally:
                listener.close()

        threading.Thread(target=serve_once, daemon=True).start()
        return {"ok": True, "port": listener.getsockname()[1]}

    def op_rawtcp_pull(self, req: dict[str, Any]) -> dict[str, Any]:
        """Yardstick: receive SIZE raw bytes from HOST:PORT into memory; return seconds."""
        size, host, port = _int(req, "size"), _str(req, "host"), _int(req, "port")
        sink = self.config.data_dir / f"rawtcp-{threading.get_ident()}.bin" if req.get("to_file") else None
        buf = bytearray(4 << 20)
        view = memoryview(buf)
        t0 = time.perf_counter()
        with socket.create_connection((host, port), timeout=self.config.handshake_timeout_s) as conn, \
                open(sink or os.devnull, "wb") as fh:
            got = 0
            while got < size:
                n = conn.recv_into(view)
                if n == 0:
                    raise RequestError(f"raw TCP peer {host}:{port} closed after {got} bytes")
                if sink is not None:
                    fh.write(view[:n])
                got += n
        seconds = time.perf_counter() - t0
        if sink is not None:
            sink.unlink(missing_ok=True)
        return {"ok": True, "seconds": seconds}

    def op_diskbench(self, req: dict[str, Any]) -> dict[str, Any]:
        """Calibration: write SIZE bytes to this VM's data disk (fsync'd) and read them back."""
        size = _int(req, "size")
        path = self.config.data_dir / f"diskbench-{threading.get_ident()}"
        block = os.urandom(1 << 20)
        try:
            t0 = time.perf_counter()
            with open(path, "wb") as fh:
                for offset in range(0, size, len(block)):
                    fh.write(block[: min(len(block), size - offset)])
                fh.flush()
                os.fsync(fh.fileno())
            write_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            with open(path, "rb") as fh:
                while fh.read(4 << 20):
                    pass
            read_s = time.perf_counter() - t0
        finally:
            path.unlink(missing_ok=True)
        return {"ok": True, "write_s": write_s, "read_s": read_s}

    def op_app_install(self, req: dict[str, Any]) -> dict[str, Any]:
        """Install a version of the user's app code (sonic.runtime.appcode); idle workers of
        the app's other versions are retired, as no job will ask for them again."""
        try:
            reply = appcode.handle_install(self.config.data_dir / "apps", req, self.config.name)
        except appcode.AppCodeError as exc:
            raise RequestError(str(exc)) from None
        base = appcode.split_spec(str(req.get("app", "")))[0]
        current = f"{base}{appcode.VERSION_SEP}{req.get('digest')}"
        self.pool.retire(lambda key: appcode.split_spec(key)[0] == base and key != current)
        return reply

    def op_coldstart(self, req: dict[str, Any]) -> dict[str, Any]:
        """Calibration: seconds to start a fresh worker for APP (process start + imports)."""
        worker = Worker(_str(req, "app"), self.config.data_dir / "workers.log", self.config.worker_start_timeout_s)
        worker.stop()
        return {"ok": True, "seconds": worker.start_s}

    def op_get(self, req: dict[str, Any], sock: socket.socket) -> None:
        job, key = check_job(req.get("job")), check_key(req.get("key"))
        path = self.store.path(job, key)
        record = self.checksums.get(job, key)
        if not path.is_file() or path.is_symlink():
            protocol.send_frame(sock, {"ok": False, "kind": "fetch", "cause": "missing",
                                       "error": f"no object {key} on {self.config.name}"})
            return
        offset = 0
        if "offset" in req or "length" in req:
            # One partition of a packed object: exactly that range, with the partition's own
            # checksum as recorded when it was packed.
            offset, length = _int(req, "offset"), _int(req, "length")
            if offset + length > path.stat().st_size:
                protocol.send_frame(sock, {"ok": False, "kind": "fetch", "cause": "missing",
                                           "error": f"range {offset}+{length} is beyond {key} on {self.config.name}"})
                return
            known = self.checksums.range_record(job, key, offset)
            size = length
            checksum = known[1] if known and known[0] == length else range_checksum(path, offset, length)
        else:
            # The size and checksum recorded when the object was made: the receiver checks the
            # bytes against them, so damage on this disk since then is caught there.
            size, checksum = (record.size, record.checksum) if record else (path.stat().st_size, file_checksum(path))
        protocol.send_frame(sock, {"ok": True, "size": size, "checksum": checksum})
        with open(path, "rb") as fh:
            if size:
                sock.sendfile(fh, offset, size)

    def op_put(self, req: dict[str, Any], sock: socket.socket, peer: str) -> None:
        job, key = check_job(req.get("job")), check_key(req.get("key"))
        size, checksum = _int(req, "size"), _str(req, "checksum")
        path = self.store.path(job, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        remaining = size
        with open(tmp, "wb") as fh:
            while remaining:
                chunk = sock.recv(min(remaining, 4 << 20))
                if not chunk:
                    tmp.unlink(missing_ok=True)
                    raise TransportError(f"{peer} closed the connection during put of {key}")
                fh.write(chunk)
                remaining -= len(chunk)
        if file_checksum(tmp) != checksum:
            tmp.unlink(missing_ok=True)
            protocol.send_frame(sock, {"ok": False, "kind": "fetch", "error": f"put of {key}: checksum mismatch"})
            return
        tmp.rename(path)
        self._remember(job, key, path, size, checksum)
        protocol.send_frame(sock, {"ok": True})

    # ------------------------------------------------------------------ connection loop
    def serve_connection(self, sock: socket.socket, peer: str) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # The handshake must be quick (an idle unauthenticated peer must not hold a thread);
        # afterwards requests may be far apart.
        sock.settimeout(self.config.handshake_timeout_s)
        try:
            protocol.server_handshake(sock, self.config.secret, self.config.name, peer)
        except (AuthenticationError, TransportError, OSError) as exc:
            log.warning("rejected connection from %s: %s", peer, exc)
            return
        # Between requests a connection may idle (clients pool them) but not for ever.
        sock.settimeout(self.config.connection_idle_s)
        while True:
            try:
                req = protocol.recv_frame(sock, peer)
            except TransportError as exc:
                if "closed the connection (0/4" not in str(exc):
                    log.warning("dropping %s: %s", peer, exc)
                return
            except OSError:
                return
            op = req.get("op")
            try:
                if op == "get":
                    self.op_get(req, sock)
                    continue
                if op == "put":
                    self.op_put(req, sock, peer)
                    continue
                if op == "run":
                    reply: dict[str, Any] = self.op_run(req, sock)
                    protocol.send_frame(sock, reply)
                    continue
                handler = {"ping": self.op_ping, "warm": self.op_warm, "drop": self.op_drop,
                           "cancel": self.op_cancel, "lease": self.op_lease, "gc": self.op_gc,
                           "fetch": self.op_fetch, "push": self.op_push, "rawtcp_serve": self.op_rawtcp_serve,
                           "rawtcp_pull": self.op_rawtcp_pull, "diskbench": self.op_diskbench,
                           "coldstart": self.op_coldstart, "app_install": self.op_app_install}.get(op)  # type: ignore[arg-type]
                if handler is None:
                    reply = {"ok": False, "kind": "request", "error": f"unknown op {op!r}"}
                else:
                    reply = handler(req)
            except BadKeyError as exc:
                log.warning("bad key from %s: %s", peer, exc)
                reply = {"ok": False, "kind": "request", "error": str(exc)}
            except RequestError as exc:
                reply = exc.reply()
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                reply = {"ok": False, "kind": "request", "error": f"malformed {op!r} request: {exc!r}"}
            except (OSError, TransportError) as exc:
                # The peer vanished mid-request (or our disk failed under a transfer): this
                # connection is unusable, the agent is fine.
                log.warning("I/O error serving %s for %s: %s", op, peer, exc)
                return
            except Exception as exc:  # noqa: BLE001 - a bug must cost one request, not the agent's answer
                log.exception("internal error serving %r for %s", op, peer)
                reply = {"ok": False, "kind": "request", "error": f"agent internal error on {op!r}: {exc!r}"}
            try:
                protocol.send_frame(sock, reply)
            except OSError:
                return

    def stop(self) -> None:
        self._stop.set()
        self.pool.stop()
        for client in self._peers.values():
            client.close()


def _peer_closed(sock: socket.socket) -> bool:
    """Has the peer of a readable socket closed (or reset) it? Peeks, consumes nothing."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _str(req: dict[str, Any], key: str) -> str:
    value = req.get(key)
    if not isinstance(value, str) or not value:
        raise RequestError(f"field {key!r} must be a non-empty string")
    return value


def _int(req: dict[str, Any], key: str) -> int:
    value = req.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise RequestError(f"field {key!r} must be a non-negative integer")
    return value


def _partitions(req: dict[str, Any]) -> dict[str, int]:
    """Optional ``partitions``: elastic consumer stage -> chosen instance count."""
    value = req.get("partitions") or {}
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 100_000
            for k, v in value.items()):
        raise RequestError("field 'partitions' must map stage names to instance counts from 1 to 100000")
    return value


def _opt_seconds(req: dict[str, Any], key: str) -> float | None:
    value = req.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise RequestError(f"field {key!r} must be a positive number of seconds")
    return float(value)


def _timeouts(doc: Any) -> Timeouts:
    """Timeouts for pulling from peers, as the coordinator configured them (else the defaults)."""
    if doc is None:
        return Timeouts()
    if not isinstance(doc, dict):
        raise RequestError("field 'peer_timeouts' must be a map")
    values = {k: _opt_seconds(doc, k) for k in ("connect_s", "control_s", "transfer_idle_s") if k in doc}
    return Timeouts(**{k: v for k, v in values.items() if v is not None})


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], agent: Agent) -> None:
        self.agent = agent
        super().__init__(address, _Handler)


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        host, port = self.client_address[:2]
        self.server.agent.serve_connection(self.request, f"{host}:{port}")


def serve(config: AgentConfig) -> None:
    # Job data is private to the agent's user: objects 0600, directories 0700 (workers inherit it).
    os.umask(0o077)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    agent = Agent(config).start()
    server = _Server((config.bind, config.port), agent)
    host, port = server.server_address[:2]
    info = {"name": config.name, "pid": os.getpid(), "host": host, "port": port, "version": __version__,
            "started": time.time()}
    tmp = config.data_dir / "agent.json.tmp"
    tmp.write_text(json.dumps(info))
    os.replace(tmp, config.data_dir / "agent.json")
    log.info("agent %s listening on %s:%s (pid %s)", config.name, host, port, os.getpid())

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %s: stopping", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        agent.stop()
        (config.data_dir / "agent.json").unlink(missing_ok=True)
        log.info("agent %s stopped", config.name)


def parse_args(argv: list[str] | None = None) -> AgentConfig:
    parser = argparse.ArgumentParser(prog="python -m sonic.runtime.agent")
    parser.add_argument("--name", required=True)
    parser.add_argument("--bind", required=True, help="cluster interface address (never 0.0.0.0 by default)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--secret-file", required=True)
    parser.add_argument("--slots", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--memory-mb", type=int, default=4096)
    parser.add_argument("--s3-endpoint", default=None)
    parser.add_argument("--s3-bucket", default=None)
    parser.add_argument("--s3-region", default="us-east-1")
    parser.add_argument("--worker-start-timeout", type=float, default=120.0)
    parser.add_argument("--handshake-timeout", type=float, default=10.0,
                        help="seconds an unauthenticated peer may take to complete the handshake")
    parser.add_argument("--verify-local", choices=("always", "changed"), default="always",
                        help="hash VM-Storage inputs before every use (always) or only when modified since "
                             "their last verification (changed)")
    parser.add_argument("--idle-worker-timeout", type=float, default=300.0,
                        help="seconds an idle warm worker is kept before it is stopped")
    parser.add_argument("--max-idle-workers", type=int, default=0,
                        help="idle warm workers kept on this VM (default: twice --slots)")
    parser.add_argument("--allow-any-interface", action="store_true",
                        help="allow --bind 0.0.0.0 / :: (exposes the agent on every interface)")
    args = parser.parse_args(argv)
    if args.slots < 1:
        parser.error("--slots must be at least 1")
    if not 0 < args.idle_worker_timeout < 1e7 or args.max_idle_workers < 0:
        parser.error("--idle-worker-timeout must be positive and --max-idle-workers non-negative")
    check_bind(args.bind, args.allow_any_interface)
    remote = RemoteSettings(args.s3_bucket, args.s3_endpoint, args.s3_region) if args.s3_bucket else None
    return AgentConfig(args.name, args.bind, args.port, args.data_dir, protocol.read_secret(args.secret_file),
                       args.slots, args.memory_mb, remote, args.worker_start_timeout, args.handshake_timeout,
                       args.verify_local, idle_worker_s=args.idle_worker_timeout,
                       max_idle_workers=args.max_idle_workers)


def check_bind(bind: str, allow_any: bool = False) -> None:
    """The agent listens on the cluster interface only; a wildcard needs an explicit opt-in."""
    try:
        wildcard = ipaddress.ip_address(bind).is_unspecified
    except ValueError:
        wildcard = bind in ("", "*")
    if wildcard and not allow_any:
        raise UserInputError(
            f"--bind {bind or repr(bind)} would expose the agent on every interface; bind the cluster interface's "
            "address (or pass --allow-any-interface deliberately)"
        )


def main(argv: list[str] | None = None) -> None:
    try:
        config = parse_args(argv)
    except SonicError as exc:
        sys.exit(f"error: {exc}")
    config.data_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(filename=config.data_dir / "agent.log", level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(config)


if __name__ == "__main__":
    main()
