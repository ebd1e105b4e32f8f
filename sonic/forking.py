"""Fork-and-report: run a task in a forked child and bring back its result or its failure.

The one implementation behind the reference executor's instances (:mod:`sonic.reference`)
and the profiler's isolated runs (:mod:`profiler.isolation`). A fork measures a task on its
own (its peak memory is its own, the parent's heap does not grow with what it ran) and keeps
a crash, ``os._exit`` or the OOM killer from taking the caller with it.

The child sends one pickled report over a pipe: pickle is safe here because the bytes only
ever travel from our own forked child to its parent.

The parent's objects are frozen (``gc.freeze``) across the ``fork``: the child then starts with
them in the permanent generation, so its collections (the instance's own, and the one
:func:`sonic.execution.release_free_memory` runs before measuring a baseline) never walk them.
A parent with pandas and scikit-learn loaded holds ~150k tracked objects: walking them took
110-130 ms per child and copied their pages (copy-on-write), which an instance that collected
while it ran counted as its own memory. Frozen, a child's release takes 0.4 ms and a fork
of a no-op task 26-32 ms instead of 136-158 ms (measured as docs/architecture.md says).
A warm worker freezes its survivors the same way, so both measure the same thing.
"""

from __future__ import annotations

import gc
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
    # See the module doc: the child never walks (or copies) the parent's objects. A parent
    # that had frozen objects of its own (a warm worker) keeps everything frozen.
    thaw = gc.get_freeze_count() == 0
    gc.freeze()
    try:
        pid = os.fork()
    except BaseException:
        if thaw:
            gc.unfreeze()
        raise
    if pid != 0 and thaw:
        gc.unfreeze()
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
