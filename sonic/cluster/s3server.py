"""The embedded S3-compatible server of local clusters: moto's server in its own process.

Why its own process: so the harness can place it in a network namespace and rate-limit its
link with ``tc``, and so its CPU does not compete with the harness's GIL.

Why a WSGI middleware: this kernel has no ``netem``, so the per-request latency of real S3
(20-30 ms to first byte) is added here. The middleware also offers in-process bandwidth
shaping (useful in loopback mode, where there is no link to shape) and fault injection (a
fraction of requests answered ``503 SlowDown``, as S3 does under load) for reliability tests.

Run: ``python -m sonic.cluster.s3server --host H --port P [--latency-ms L] [--fail-rate F]
[--mbps M] [--conn-mbps M] [--bucket B] [--ready-file PATH]``. Once listening it prints one
JSON line ``{"host", "port", "pid", "endpoint_url"}`` and, with ``--ready-file``, writes the
same document there atomically.

Control endpoints (bucket names cannot start with ``_``, so these never shadow S3 paths):
``GET /_sonic/stats`` and ``PUT /_sonic/faults`` with a JSON body such as
``{"fail_rate": 0.2, "latency_ms": 30}`` to change behaviour of a running server.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Credentials the embedded server accepts (moto accepts any; these are the conventional
# test values). Real S3 credentials are never needed nor used for local clusters.
EMBEDDED_S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}

# Shaping granularity: bytes are released in chunks of this size; 64 KiB keeps the rate
# smooth at tens of Mbit/s without a Python-level call per TCP segment.
SHAPING_CHUNK = 64 * 1024

CONTROL_PREFIX = "/_sonic/"

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class TokenBucket:
    """Thread-safe token bucket in bytes/s; ``take(n)`` blocks until n bytes may pass."""

    def __init__(self, rate_Bps: float, burst: float | None = None) -> None:
        self.rate = rate_Bps
        # One chunk of burst (or 10 ms worth of rate, if larger) lets a chunk pass without
        # stalling while keeping the long-run rate exact.
        self.burst = burst if burst is not None else max(float(SHAPING_CHUNK), rate_Bps * 0.01)
        self._tokens = self.burst
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= n
            debt = -self._tokens
        if debt > 0:
            # Reservation style: the debt is ours, so concurrent takers queue up behind it.
            time.sleep(debt / self.rate)


@dataclass
class Behaviour:
    """What the middleware does to each request; mutable at run time via PUT /_sonic/faults."""

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


class _ShapedInput:
    """A wsgi.input that releases request-body bytes at the shaped rate."""

    def __init__(self, raw: Any, buckets: list[TokenBucket], stats: Stats, lock: threading.Lock) -> None:
        self._raw = raw
        self._buckets = buckets
        self._stats = stats
        self._lock = lock

    def _account(self, data: bytes) -> bytes:
        for bucket in self._buckets:
            bucket.take(len(data))
        with self._lock:
            self._stats.bytes_in += len(data)
        return data

    def read(self, size: int | None = -1) -> bytes:
        # Full reads in chunk-sized steps, so shaping stays smooth and callers still get
        # exactly ``size`` bytes (or everything up to EOF), as file semantics promise.
        want = None if size is None or size < 0 else size
        parts = []
        while want is None or want > 0:
            chunk = self._raw.read(SHAPING_CHUNK if want is None else min(want, SHAPING_CHUNK))
            if not chunk:
                break
            parts.append(self._account(chunk))
            if want is not None:
                want -= len(chunk)
        return b"".join(parts)

    def readline(self, size: int = -1) -> bytes:
        return self._account(self._raw.readline(size))

    def readlines(self, hint: int = -1) -> list[bytes]:
        return [self._account(line) for line in self._raw.readlines(hint)]

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line


class FaultMiddleware:
    """WSGI middleware: latency, bandwidth shaping, 503 SlowDown injection, stats."""

    def __init__(self, app: WSGIApp, behaviour: Behaviour, seed: int | None = None) -> None:
        self.app = app
        self.behaviour = behaviour
        self.stats = Stats()
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._aggregate: TokenBucket | None = None
        self._configure()

    def _configure(self) -> None:
        mbps = self.behaviour.mbps
        self._aggregate = TokenBucket(mbps * 1e6 / 8) if mbps else None

    def _buckets(self) -> list[TokenBucket]:
        buckets = [self._aggregate] if self._aggregate else []
        if self.behaviour.conn_mbps:
            buckets.append(TokenBucket(self.behaviour.conn_mbps * 1e6 / 8))
        return buckets

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith(CONTROL_PREFIX):
            return self._control(environ, start_response)
        with self._lock:
            self.stats.requests += 1
            fail = self.behaviour.fail_rate > 0 and self._rng.random() < self.behaviour.fail_rate
            if fail:
                self.stats.failed += 1
        if self.behaviour.latency_ms > 0:
            # The feature itself: emulated time to first byte, applied per request.
            time.sleep(self.behaviour.latency_ms / 1000.0)
        buckets = self._buckets()
        environ["wsgi.input"] = _ShapedInput(environ["wsgi.input"], buckets, self.stats, self._lock)
        if fail:
            return self._slow_down(environ, start_response)
        return self._shaped(self.app(environ, start_response), buckets)

    def _shaped(self, body: Iterable[bytes], buckets: list[TokenBucket]) -> Iterator[bytes]:
        try:
            for piece in body:
                for start in range(0, len(piece), SHAPING_CHUNK if buckets else max(len(piece), 1)):
                    chunk = piece[start:start + SHAPING_CHUNK] if buckets else piece
                    for bucket in buckets:
                        bucket.take(len(chunk))
                    with self._lock:
                        self.stats.bytes_out += len(chunk)
                    yield chunk
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()

    def _slow_down(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        # Drain the request body first: leaving it unread would desynchronise a keep-alive
        # connection and the client would see garbage instead of a clean, retryable 503.
        length = int(environ.get("CONTENT_LENGTH") or 0)
        stream = environ["wsgi.input"]
        while length > 0:
            chunk = stream.read(min(length, SHAPING_CHUNK))
            if not chunk:
                break
            length -= len(chunk)
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>"
            f"<RequestId>{uuid.uuid4().hex[:16]}</RequestId></Error>"
        ).encode()
        start_response("503 Slow Down", [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
        return [body]

    def _control(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        status = "200 OK"
        if path == CONTROL_PREFIX + "stats" and method == "GET":
            with self._lock:
                doc: dict[str, Any] = {**asdict(self.stats), **asdict(self.behaviour)}
        elif path == CONTROL_PREFIX + "faults" and method in ("PUT", "POST"):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            try:
                update = json.loads(environ["wsgi.input"].read(length) or b"{}")
                with self._lock:
                    for key, value in update.items():
                        if key not in asdict(self.behaviour):
                            raise ValueError(f"unknown setting {key!r}")
                        setattr(self.behaviour, key, None if value is None else float(value))
                    self._configure()
                doc = asdict(self.behaviour)
            except (ValueError, TypeError, AttributeError) as exc:
                status, doc = "400 Bad Request", {"error": str(exc)}
        else:
            status, doc = "404 Not Found", {"error": f"no control endpoint {method} {path}"}
        body = json.dumps(doc).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]


def build_app(behaviour: Behaviour, seed: int | None = None) -> tuple[FaultMiddleware, WSGIApp]:
    """moto's full dispatcher wrapped in the middleware; returns (middleware, raw moto app)."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    moto_app = DomainDispatcherApplication(create_backend_app)
    return FaultMiddleware(moto_app, behaviour, seed), moto_app


def create_bucket_in_process(moto_app: WSGIApp, bucket: str, region: str) -> None:
    """Create ``bucket`` by calling moto directly, bypassing latency and fault injection,
    so the server is usable the moment it reports ready."""
    from werkzeug.test import Client

    body = b""
    if region != "us-east-1":
        body = (
            "<CreateBucketConfiguration><LocationConstraint>"
            f"{region}</LocationConstraint></CreateBucketConfiguration>"
        ).encode()
    response = Client(moto_app).put(
        f"/{bucket}",
        data=body,
        headers={
            "Host": "127.0.0.1",
            # moto picks the backend from the signing scope; a minimal SigV4-shaped header
            # routes to S3 (moto server mode does not verify signatures).
            "Authorization": (
                f"AWS4-HMAC-SHA256 Credential=testing/20240101/{region}/s3/aws4_request, "
                "SignedHeaders=host, Signature=0"
            ),
        },
    )
    if response.status_code not in (200, 409):
        raise RuntimeError(f"creating bucket {bucket} failed: HTTP {response.status_code} {response.get_data()[:200]!r}")


def _write_atomic(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def _env_float(name: str, default: float | None) -> float | None:
    raw = os.environ.get(name)
    return float(raw) if raw not in (None, "") else default


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sonic.cluster.s3server", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one")
    parser.add_argument("--latency-ms", type=float, default=_env_float("SONIC_S3_LATENCY_MS", 0.0),
                        help="added latency per request (env SONIC_S3_LATENCY_MS)")
    parser.add_argument("--fail-rate", type=float, default=_env_float("SONIC_S3_FAIL_RATE", 0.0),
                        help="fraction of requests answered 503 SlowDown (env SONIC_S3_FAIL_RATE)")
    parser.add_argument("--fail-seed", type=int, default=None, help="seed of the fault RNG, for reproducible runs")
    parser.add_argument("--mbps", type=float, default=_env_float("SONIC_S3_MBPS", None),
                        help="aggregate bandwidth limit in Mbit/s, in-process (env SONIC_S3_MBPS)")
    parser.add_argument("--conn-mbps", type=float, default=_env_float("SONIC_S3_CONN_MBPS", None),
                        help="per-request-stream bandwidth limit in Mbit/s (env SONIC_S3_CONN_MBPS)")
    parser.add_argument("--bucket", action="append", default=[], help="bucket to create on start (repeatable)")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--ready-file", type=Path, default=None,
                        help="write {host,port,pid,endpoint_url} here when listening")
    parser.add_argument("--access-log", action="store_true", help="log every request (off: experiments make millions)")
    args = parser.parse_args(argv)
    if not 0.0 <= args.fail_rate <= 1.0:
        parser.error("--fail-rate must be between 0 and 1")

    # moto's server mode defaults: no signature checks, all services reachable.
    os.environ.setdefault("AWS_DEFAULT_REGION", args.region)
    for key, value in EMBEDDED_S3_CREDENTIALS.items():
        os.environ.setdefault(key, value)

    import logging

    from werkzeug.serving import make_server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not args.access_log:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)

    behaviour = Behaviour(args.latency_ms or 0.0, args.fail_rate or 0.0, args.mbps, args.conn_mbps)
    middleware, moto_app = build_app(behaviour, args.fail_seed)
    for bucket in args.bucket:
        create_bucket_in_process(moto_app, bucket, args.region)
    server = make_server(args.host, args.port, middleware, threaded=True)
    port = server.socket.getsockname()[1]
    host_for_url = f"[{args.host}]" if ":" in args.host else args.host
    doc = {"host": args.host, "port": port, "pid": os.getpid(), "endpoint_url": f"http://{host_for_url}:{port}"}

    def _stop(signum: int, frame: Any) -> None:
        # shutdown() blocks until serve_forever returns, so run it off the main thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if args.ready_file:
        _write_atomic(args.ready_file, doc)
    print(json.dumps(doc), flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        if args.ready_file:
            args.ready_file.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
