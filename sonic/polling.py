"""Polling under a deadline: wait with exponential backoff until something holds or time is up.

Used to wait for processes, agents and network endpoints, on real VMs and emulated ones alike.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

# Polling backoff bounds: start fast (processes usually come up in ~100 ms) and cap the
# interval so a deadline is never overshot by much.
BACKOFF_FIRST_S = 0.01
BACKOFF_MAX_S = 0.25


def backoff(deadline: float, first: float = BACKOFF_FIRST_S, cap: float = BACKOFF_MAX_S) -> Iterator[float]:
    """Yield the remaining time until ``deadline`` (monotonic), sleeping with exponential
    backoff between yields; stops once the deadline has passed. The first yield is immediate."""
    delay = first
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        yield remaining
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, cap)
