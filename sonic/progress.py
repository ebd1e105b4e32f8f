"""Progress of long work, in one place: a live bar on a terminal, plain occasional lines on
stderr otherwise, nothing with ``--json``.

Results never go through here: a verb prints its results to stdout whatever stdout is (a
terminal, a pipe, ``> out.txt``); progress only ever goes to stderr, so stdout stays exactly the
results. On a terminal, click's progress bar redraws one line per stage. Without one, a plain
status line at most every :data:`LINE_INTERVAL_S` seconds, the first one only after the work has
run that long: a log of a long job gets a line every few seconds, not one per instance, and a
short command (or one that fails early) prints nothing but its result or its one error line.
"""

from __future__ import annotations

import enum
import sys
import time
from collections.abc import Callable
from typing import Any

import click

#: Seconds between two plain progress lines (non-terminal output), and before the first.
LINE_INTERVAL_S = 10.0


class ProgressMode(enum.Enum):
    OFF = "off"      # --json, or a caller that reports by itself
    LIVE = "live"    # stderr is a terminal: redraw in place
    LINES = "lines"  # stderr is a pipe or a file: occasional plain lines

    @property
    def shows(self) -> bool:
        return self is not ProgressMode.OFF


def progress_mode(quiet: bool = False) -> ProgressMode:
    """The mode for a verb: off when ``quiet`` (``--json``), else by what stderr is."""
    if quiet:
        return ProgressMode.OFF
    return ProgressMode.LIVE if sys.stderr.isatty() else ProgressMode.LINES


def as_mode(progress: bool | ProgressMode) -> ProgressMode:
    """Library callers may say just yes or no; yes means what stderr calls for."""
    if isinstance(progress, ProgressMode):
        return progress
    return progress_mode() if progress else ProgressMode.OFF


def note(text: str) -> None:
    """One progress line (a phase starting, a size measured): to stderr, never to stdout."""
    click.echo(text, err=True)


class InstanceProgress:
    """The ``(stage, done, total)`` callback of the executors, drawn as ``mode`` says.

    The only progress printer for instance counts: the reference executor and the cluster
    coordinator both report through it (``sonic run`` either way)."""

    def __init__(self, mode: ProgressMode, *, indent: str = "", interval_s: float = LINE_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic, echo: Callable[[str], None] = note) -> None:
        self.mode = mode
        self.indent = indent
        self.interval_s = interval_s
        self.clock = clock
        self.echo = echo
        self._bars: dict[str, Any] = {}  # click's ProgressBar is not public API, hence Any
        self._last_line: float | None = None  # LINES: when the last line was due (first: the start)

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.mode is ProgressMode.LIVE:
            self._live(stage, done, total)
        elif self.mode is ProgressMode.LINES:
            self._line(stage, done, total)

    def _live(self, stage: str, done: int, total: int) -> None:
        bar = self._bars.get(stage)
        if bar is None or bar.length != total:  # a re-plan may change a stage's instance count
            bar = click.progressbar(length=max(total, 1), label=f"{self.indent}{stage}", file=sys.stderr,
                                    show_pos=True, show_eta=False)
            self._bars[stage] = bar
        bar.update(done - bar.pos)
        if done >= total:
            bar.render_finish()
            del self._bars[stage]

    def _line(self, stage: str, done: int, total: int) -> None:
        now = self.clock()
        if self._last_line is None:
            self._last_line = now
        elif now - self._last_line >= self.interval_s:
            self._last_line = now
            self.echo(f"{self.indent}{stage}: {done}/{total} instances")
