"""What the embedded S3 server does to traffic: bandwidth shaping, latency, faults, counters.

This kernel has no ``netem``, so the per-request latency of real S3 (20-30 ms to first byte) is
added in the server; in loopback mode there is no link to shape either, so bandwidth is shaped
here too (netns mode shapes the link with ``tc`` instead).
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

# Shaping granularity: bytes are released in chunks of this size; 64 KiB keeps the rate
# smooth at tens of Mbit/s without a call per TCP segment.
SHAPING_CHUNK = 64 * 1024


class TokenBucket:
    """Thread-safe token bucket in bytes/s. ``reserve(n)`` books n bytes and says how long the
    caller must wait before sending them; ``take(n)`` waits that long (blocking)."""

    def __init__(self, rate_Bps: float, burst: float | None = None) -> None:
        self.rate = rate_Bps
        # One chunk of burst (or 10 ms worth of rate, if larger) lets a chunk pass without
        # stalling while keeping the long-run rate exact.
        self.burst = burst if burst is not None else max(float(SHAPING_CHUNK), rate_Bps * 0.01)
        self._tokens = self.burst
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def reserve(self, n: int) -> float:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= n
            debt = -self._tokens
        # Reservation style: the debt is ours, so concurrent takers queue up behind it.
        return debt / self.rate if debt > 0 else 0.0

    def take(self, n: int) -> None:
        delay = self.reserve(n)
        if delay > 0:
            time.sleep(delay)  # the shaping itself: the caller asked to be held back


@dataclass
class Behaviour:
    """What the server does to each request; mutable at run time via PUT /_sonic/faults."""

    latency_ms: float = 0.0
    fail_rate: float = 0.0
    mbps: float | None = None          # aggregate bandwidth over all connections
    conn_mbps: float | None = None     # per request stream


@dataclass
class Stats:
    requests: int = 0
    failed: int = 0
    bytes_in: int = 0
    bytes_out: int = 0


class Pacer:
    """One request's view of shaping: the buckets its bytes pass through and the counters."""

    def __init__(self, buckets: list[TokenBucket], stats: Stats) -> None:
        self.buckets = buckets
        self.stats = stats

    @property
    def shaping(self) -> bool:
        return bool(self.buckets)

    async def _pace(self, n: int) -> None:
        for bucket in self.buckets:
            delay = bucket.reserve(n)
            if delay > 0:
                await asyncio.sleep(delay)

    async def inbound(self, n: int) -> None:
        self.stats.bytes_in += n
        await self._pace(n)

    async def outbound(self, n: int) -> None:
        self.stats.bytes_out += n
        await self._pace(n)
