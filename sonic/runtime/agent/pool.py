"""Warm worker processes of the agent (:mod:`sonic.runtime.worker` is their program) and the
pool that lends them to runs, one per slot."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sonic.runtime.agent.request import RequestError
from sonic.runtime.worker import WorkerRunReply, decode_run_reply, read_frame, write_frame


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
            if watch is not None and peer_closed(watch):
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

    def run(self, request: dict[str, Any], timeout_s: float, watch: socket.socket | None = None) -> WorkerRunReply:
        try:
            write_frame(self._in, request)
        except BrokenPipeError:
            raise RequestError(f"worker for {self.app!r} is gone (exit code {self.proc.poll()})", "instance") from None
        doc = self._read(timeout_s, f"stage {request.get('stage')!r} instance {request.get('index')}", watch)
        try:
            return decode_run_reply(doc)
        except ValueError as exc:  # our own worker's frame: a bug, not the requester's fault
            raise RequestError(f"worker for {self.app!r}: {exc}", "instance") from None

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


def peer_closed(sock: socket.socket) -> bool:
    """Has the peer of a readable socket closed (or reset) it? Peeks, consumes nothing."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
