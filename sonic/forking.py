"""Fork-and-report: run a task in a forked child and bring back its result or its failure.

The one implementation behind the reference executor's instances (:mod:`sonic.reference`)
and the profiler's isolated runs (:mod:`profiler.isolation`). A fork measures a task on its
own (its peak memory is its own, the parent's heap does not grow with what it ran) and keeps
a crash, ``os._exit`` or the OOM killer from taking the caller with it.

The child sends one pickled report over a pipe: pickle is safe here because the bytes only
ever travel from our own forked child to its parent.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sonic.errors import ChildVanished

T = TypeVar("T")


@dataclass(frozen=True)
class ForkReport(Generic[T]):
    """What the child reported: ``ok`` with the task's ``value``, or not with ``failure``,
    the picklable description of its exception that ``describe_failure`` made in the child."""

    ok: bool
    value: T | None = None
    failure: Any = None


def fork_and_report(task: Callable[[], T], describe_failure: Callable[[BaseException], Any], *,
                    stdout_to_stderr: bool = False) -> ForkReport[T]:
    """Run ``task()`` in a forked child and return its report; raise :class:`ChildVanished`
    if the child ended without one.

    ``describe_failure(exc)`` runs in the child and must return something picklable (an
    exception with a custom constructor may not survive pickling). ``stdout_to_stderr``: the
    task's prints go to stderr, as stdout may carry a CLI's JSON report.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report once, never return into the caller's stack
        os.close(read_fd)
        try:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            if stdout_to_stderr:
                sys.stdout.flush()
                os.dup2(2, 1)
                sys.stdout = sys.stderr
            try:
                report: ForkReport[T] = ForkReport(True, task())
            except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
                report = ForkReport(False, failure=describe_failure(exc))
            with os.fdopen(write_fd, "wb") as fh:
                pickle.dump(report, fh)
        finally:
            os._exit(0)
    os.close(write_fd)
    try:
        with os.fdopen(read_fd, "rb") as fh:
            raw = fh.read()
    finally:
        _, status = os.waitpid(pid, 0)
    if not raw:
        raise ChildVanished(f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                            else f"exited with code {os.waitstatus_to_exitcode(status)}")
    child_report: ForkReport[T] = pickle.loads(raw)  # written by our own child (see the module doc)
    return child_report
