"""The embedded S3-compatible server of local clusters: objects on disk, served by aiohttp.

Why not moto (its predecessor here): moto keeps every object in RAM and spends CPU per byte, so
after one 512 MB sort it held 2.3-2.9 GB and made "remote" look several times slower than it
is. This server stores one file per object, streams bodies in and ``sendfile``s them out, and
speaks the S3 subset boto3 uses (see :mod:`sonic.emulation.s3http`); docs/architecture.md has the
measurements behind the choice.

Why its own process: so the harness can place it in a network namespace and rate-limit its
link with ``tc``, and so its CPU does not compete with the harness's GIL.

Requests must be SigV4-signed with the cluster's key pair (env ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY``, default :data:`EMBEDDED_S3_CREDENTIALS`): the key id and the
signature are checked, the body hash too with ``--verify-payload``.

This kernel has no ``netem``, so the per-request latency of real S3 (20-30 ms to first byte) is
added here; so are in-process bandwidth shaping (useful in loopback mode, where there is no link
to shape) and fault injection (a fraction of requests answered ``503 SlowDown``, as S3 does
under load) for reliability tests.

Run: ``python -m sonic.emulation.s3server --host H --port P [--latency-ms L] [--fail-rate F]
[--mbps M] [--conn-mbps M] [--bucket B] [--data-dir D] [--ready-file PATH]``. Once listening it
prints one JSON line ``{"host", "port", "pid", "endpoint_url"}`` and, with ``--ready-file``,
writes the same document there atomically. SIGTERM/SIGINT stop it and remove its objects.

Control endpoints (bucket names cannot start with ``_``, so these never shadow S3 paths):
``GET /_sonic/stats`` and ``PUT /_sonic/faults`` with a JSON body such as
``{"fail_rate": 0.2, "latency_ms": 30}`` to change behaviour of a running server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import signal
import socket
import sys
import tempfile
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from aiohttp import web

from sonic.cluster.s3auth import Credentials
from sonic.emulation.s3http import S3Api, drain
from sonic.emulation.s3shaping import Behaviour, Pacer, Stats, TokenBucket
from sonic.emulation.s3store import ObjectStore, S3Error

__all__ = ["EMBEDDED_S3_CREDENTIALS", "Behaviour", "Front", "Stats", "TokenBucket", "main"]

# The key pair local clusters use (the conventional test values); the server accepts only the
# pair it is started with. Real S3 credentials are never needed nor used for local clusters.
EMBEDDED_S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}

CONTROL_PREFIX = "/_sonic/"
LISTEN_BACKLOG = 1024


class Front:
    """Every request passes here first: control endpoints, latency, 503 injection, shaping."""

    def __init__(self, api: S3Api, behaviour: Behaviour, seed: int | None = None) -> None:
        self.api = api
        self.behaviour = behaviour
        self.stats = Stats()
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

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith(CONTROL_PREFIX):
            return await self._control(request)
        self.stats.requests += 1
        fail = self.behaviour.fail_rate > 0 and self._rng.random() < self.behaviour.fail_rate
        if fail:
            self.stats.failed += 1
        if self.behaviour.latency_ms > 0:
            # The feature itself: emulated time to first byte, applied per request.
            await asyncio.sleep(self.behaviour.latency_ms / 1000.0)
        pacer = Pacer(self._buckets(), self.stats)
        if fail:
            return await self._slow_down(request, pacer)
        return await self.api.handle(request, pacer)

    async def _slow_down(self, request: web.Request, pacer: Pacer) -> web.Response:
        # Drain the request body first: leaving it unread would desynchronise a keep-alive
        # connection and the client would see garbage instead of a clean, retryable 503.
        if request.can_read_body:
            async for chunk in request.content.iter_any():
                await pacer.inbound(len(chunk))
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>"
            f"<RequestId>{uuid.uuid4().hex[:16]}</RequestId></Error>"
        ).encode()
        return web.Response(status=503, reason="Slow Down", body=body, content_type="application/xml")

    async def _control(self, request: web.Request) -> web.Response:
        path, method = request.path, request.method
        status = 200
        if path == CONTROL_PREFIX + "stats" and method == "GET":
            doc: dict[str, Any] = {**asdict(self.stats), **asdict(self.behaviour)}
        elif path == CONTROL_PREFIX + "faults" and method in ("PUT", "POST"):
            try:
                update = json.loads(await request.read() or b"{}")
                for key in update:
                    if key not in asdict(self.behaviour):
                        raise ValueError(f"unknown setting {key!r}")
                for key, value in update.items():
                    setattr(self.behaviour, key, None if value is None else float(value))
                self._configure()
                doc = asdict(self.behaviour)
            except (ValueError, TypeError, AttributeError) as exc:
                status, doc = 400, {"error": str(exc)}
        else:
            await drain(request)
            status, doc = 404, {"error": f"no control endpoint {method} {path}"}
        return web.json_response(doc, status=status)


def _write_atomic(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def _env_float(name: str, default: float | None) -> float | None:
    raw = os.environ.get(name)
    return float(raw) if raw not in (None, "") else default


def accepted_credentials() -> Credentials:
    """The one key pair this server accepts: the environment's, else the embedded default."""
    return Credentials(os.environ.get("AWS_ACCESS_KEY_ID") or EMBEDDED_S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                       os.environ.get("AWS_SECRET_ACCESS_KEY") or EMBEDDED_S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG, reuse_port=False)


async def serve(args: argparse.Namespace, data_root: Path) -> None:
    store = ObjectStore(data_root)
    try:
        for bucket in args.bucket:
            try:
                store.create_bucket(bucket)
            except S3Error as err:
                raise SystemExit(f"s3server: cannot create bucket {bucket!r}: {err.message}") from None
        api = S3Api(store, accepted_credentials(), verify_payload=args.verify_payload)
        behaviour = Behaviour(args.latency_ms or 0.0, args.fail_rate or 0.0, args.mbps, args.conn_mbps)
        front = Front(api, behaviour, args.fail_seed)
        app = web.Application(client_max_size=1 << 20)
        app.router.add_route("*", "/{tail:.*}", front)
        runner = web.AppRunner(app, access_log=logging.getLogger("aiohttp.access") if args.access_log else None,
                               handle_signals=False)
        await runner.setup()
        sock = _listen(args.host, args.port)
        site = web.SockSite(runner, sock)
        await site.start()
        port = sock.getsockname()[1]
        host_for_url = f"[{args.host}]" if ":" in args.host else args.host
        doc = {"host": args.host, "port": port, "pid": os.getpid(), "endpoint_url": f"http://{host_for_url}:{port}"}
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        if args.ready_file:
            _write_atomic(args.ready_file, doc)
        print(json.dumps(doc), flush=True)
        try:
            await stop.wait()
        finally:
            if args.ready_file:
                args.ready_file.unlink(missing_ok=True)
            await runner.cleanup()
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sonic.emulation.s3server", description=__doc__.split("\n")[0])
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
    parser.add_argument("--region", default="us-east-1", help="region clients sign for (any region is accepted)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="directory for object files (a run directory inside it is removed on exit); "
                             "default: a temporary directory")
    parser.add_argument("--verify-payload", action="store_true",
                        help="also check each body against its signed SHA-256 and CRC32 (costs CPU per byte)")
    parser.add_argument("--ready-file", type=Path, default=None,
                        help="write {host,port,pid,endpoint_url} here when listening")
    parser.add_argument("--access-log", action="store_true", help="log every request (off: experiments make millions)")
    args = parser.parse_args(argv)
    if not 0.0 <= args.fail_rate <= 1.0:
        parser.error("--fail-rate must be between 0 and 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.data_dir is not None:
        args.data_dir.mkdir(parents=True, exist_ok=True)
        asyncio.run(serve(args, args.data_dir))
    else:
        with tempfile.TemporaryDirectory(prefix="sonic-s3-") as tmp:
            asyncio.run(serve(args, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
