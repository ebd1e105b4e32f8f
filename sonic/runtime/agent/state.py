"""The agent's state: its object store, worker pool, fetch cache and the jobs it serves
(leases, cancellations, running instances), with the housekeeping thread that expires leases
and reaps idle workers. The ops (:mod:`.ops`, :mod:`.bench_ops`) act on it; the server
(:mod:`.server`) only moves requests and replies."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sonic.errors import TransportError
from sonic.runtime.agent.config import AgentConfig
from sonic.runtime.agent.fetch import Fetcher
from sonic.runtime.agent.pool import Worker, WorkerPool
from sonic.runtime.agent.request import RequestError
from sonic.runtime.objects import Checksums, ObjectStore
from sonic.runtime.remote import RemoteStore

log = logging.getLogger("sonic.agent")

#: How long a cancelled or expired job is remembered (refused), for any straggling request.
TOMBSTONE_S = 86400.0


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.store = ObjectStore(config.data_dir / "objects")
        self.pool = WorkerPool(config.slots, config.data_dir / "workers.log", config.worker_start_timeout_s,
                               idle_s=config.idle_worker_s, max_idle=config.max_idle_workers)
        self.remote = RemoteStore(config.remote) if config.remote else None
        self.checksums = Checksums(trust_unchanged=config.verify_local == "changed")
        self.fetcher = Fetcher(config.name, config.secret, self.store, self.checksums, self.remote)
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

    def stop(self) -> None:
        self._stop.set()
        self.pool.stop()
        self.fetcher.close()

    # ------------------------------------------------------------------ jobs: leases, cancel
    def check_live(self, job: str) -> None:
        """Refuse a job this agent already ended (cancelled, or its lease expired)."""
        with self._lock:
            ended = self._ended.get(job)
        if ended is not None:
            raise RequestError(f"job {job} was ended on VM {self.config.name} ({ended[1]}); start a new run",
                               "cancelled")

    def is_ended(self, job: str) -> bool:
        with self._lock:
            return job in self._ended

    def renew(self, job: str, ttl_s: float) -> None:
        with self._lock:
            self._leases[job] = max(self._leases.get(job, 0.0), time.monotonic() + ttl_s)

    def leases(self) -> list[str]:
        with self._lock:
            return sorted(self._leases)

    def live_jobs(self) -> set[str]:
        """Jobs with a lease or an instance running here (garbage collection keeps them)."""
        with self._lock:
            return set(self._leases) | {job for job, ws in self._running.items() if ws}

    @contextmanager
    def running(self, job: str, worker: Worker) -> Iterator[None]:
        """Count ``worker`` as running an instance of ``job`` (a cancel kills it) meanwhile."""
        with self._lock:
            self.busy += 1
            self._running.setdefault(job, set()).add(worker)
        try:
            yield
        finally:
            with self._lock:
                self.busy -= 1
                running = self._running.get(job)
                if running is not None:
                    running.discard(worker)
                    if not running:
                        del self._running[job]

    def drop_job(self, job: str) -> None:
        """Delete the job's objects here (its checksums and fetch locks with them)."""
        self.store.drop_job(job)
        self.checksums.forget_job(job)
        self.fetcher.forget_job(job)

    def end_job(self, job: str, reason: str, *, remote: bool) -> int:
        """Cancel ``job`` here: refuse it from now on, kill its running instances (their slots
        free at once), delete its objects (and its S3 prefix if ``remote``). Returns how many
        instances were killed."""
        with self._lock:
            self._ended[job] = (time.monotonic(), reason)
            self._leases.pop(job, None)
            workers = list(self._running.get(job, ()))
        self.fetcher.forget_job(job)
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
                for job in [j for j, (when, _) in self._ended.items() if now - when > TOMBSTONE_S]:
                    del self._ended[job]
            for job in expired:
                log.warning("job %s: lease expired; dropping its work and objects", job)
                self.end_job(job, "its lease expired: the coordinator stopped renewing it", remote=True)
            reaped = self.pool.reap()
            if reaped:
                log.info("stopped %d idle worker(s)", reaped)
