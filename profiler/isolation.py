"""Run a piece of the sweep in a forked child and bring its result (or failure) back.

Why: the reference executor forks stage instances from the process that calls it, and an
instance's peak resident memory includes the pages it shares with that parent. If the
profiler itself generated inputs or validated outputs, its resident set would grow with the
sizes already processed (freed heap is not returned to the OS), and every later instance
would report a larger "baseline": a memory trend that has nothing to do with the stage.
Generating each input and running each run in its own fork keeps every instance's
baseline equal to the profiler's steady state, whatever ran before.
"""

from __future__ import annotations

import os
import pickle
import signal
from collections.abc import Callable
from typing import TypeVar

from sonic.errors import ExecutionError

T = TypeVar("T")


class ChildFailure(Exception):
    """What a forked task raised, carried back as plain fields (exceptions with custom
    constructors do not survive pickling)."""

    def __init__(self, kind: str, message: str, fields: dict[str, object]) -> None:
        super().__init__(message)
        self.kind = kind
        self.fields = fields


def in_fork(task: Callable[[], T], describe: Callable[[BaseException], dict[str, object]] | None = None) -> T:
    """Run ``task()`` in a forked child; return its result or raise :class:`ChildFailure`.

    ``describe(exc)`` turns the child's exception into picklable fields for the parent.
    The result must be picklable; it only ever travels from our own child to us.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into the caller's stack
        os.close(read_fd)
        try:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            try:
                payload: tuple[str, object] = ("ok", task())
            except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
                fields = describe(exc) if describe else {}
                payload = ("error", (type(exc).__name__, str(exc), fields))
            with os.fdopen(write_fd, "wb") as fh:
                pickle.dump(payload, fh)
        finally:
            os._exit(0)
    os.close(write_fd)
    try:
        with os.fdopen(read_fd, "rb") as fh:
            raw = fh.read()
    finally:
        _, status = os.waitpid(pid, 0)
    if not raw:
        how = (f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
               else f"exited with code {os.waitstatus_to_exitcode(status)}")
        raise ExecutionError(f"the profiling child process {how} without reporting (out of memory?)")
    kind, value = pickle.loads(raw)
    if kind == "ok":
        return value  # type: ignore[return-value]
    name, message, fields = value  # type: ignore[misc]
    raise ChildFailure(name, message, fields)
