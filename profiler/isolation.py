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

from collections.abc import Callable
from typing import TypeVar, cast

from sonic.errors import ChildFailure, ExecutionError
from sonic.forking import ChildVanished, fork_and_report

T = TypeVar("T")


def in_fork(task: Callable[[], T], describe: Callable[[BaseException], dict[str, object]] | None = None) -> T:
    """Run ``task()`` in a forked child; return its result or raise :class:`ChildFailure`.

    ``describe(exc)`` turns the child's exception into picklable fields for the parent.
    The result must be picklable; it only ever travels from our own child to us.
    """

    def failure_fields(exc: BaseException) -> tuple[str, str, dict[str, object]]:
        return type(exc).__name__, str(exc), describe(exc) if describe else {}

    try:
        report = fork_and_report(task, failure_fields)
    except ChildVanished as lost:
        raise ExecutionError(f"the profiling child process {lost.how} without reporting (out of memory?)") from None
    if report.ok:
        return cast(T, report.value)  # ok: the task's own result
    name, message, fields = report.failure
    raise ChildFailure(name, message, fields)
