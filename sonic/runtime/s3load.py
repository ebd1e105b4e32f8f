"""Aggregate S3 throughput under concurrent boto3 clients, next to the local-disk yardstick.

``s3_aggregate`` runs ``clients`` threads, each with its own boto3 client: all put their
objects at once (``put_object`` from a file), then all get them back (``get_object`` streamed
into a file). Aggregate MB/s is total bytes over wall time of each phase. ``file_aggregate``
moves the same bytes with the same threads between local files and no S3 at all: what
the disk and the page cache allow, the most any S3 path on this machine could reach.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.config

COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class S3Target:
    endpoint_url: str
    bucket: str
    access_key: str | None
    secret_key: str | None
    region: str = "us-east-1"

    def client(self) -> Any:
        session = boto3.session.Session(aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key)
        config = botocore.config.Config(region_name=self.region, retries={"max_attempts": 3, "mode": "standard"},
                                        read_timeout=300)
        return session.client("s3", endpoint_url=self.endpoint_url, config=config)


@dataclass(frozen=True)
class Throughput:
    put_MBps: float
    get_MBps: float
    total_bytes: int


def _phase(clients: int, work: Callable[[int], int]) -> tuple[float, int]:
    """Run ``work(i)`` on ``clients`` threads released together; (wall seconds, bytes)."""
    start = threading.Barrier(clients + 1)

    def run(i: int) -> int:
        start.wait()
        return work(i)

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(run, i) for i in range(clients)]
        start.wait()
        t0 = time.perf_counter()
        moved = sum(f.result() for f in futures)
        return time.perf_counter() - t0, moved


def _mbps(moved: int, seconds: float) -> float:
    return moved / seconds / 1e6 if seconds > 0 else float("inf")


def s3_aggregate(target: S3Target, source: Path, workdir: Path, *, clients: int = 4,
                 objects_per_client: int = 2) -> Throughput:
    """Aggregate put and get MB/s of ``clients`` concurrent boto3 clients; cleans up its keys."""
    size = source.stat().st_size
    s3 = [target.client() for _ in range(clients)]
    prefix = f"s3load-{uuid.uuid4().hex[:12]}/"
    keys = [[f"{prefix}{i}/{j}" for j in range(objects_per_client)] for i in range(clients)]

    def put(i: int) -> int:
        for key in keys[i]:
            with open(source, "rb") as body:
                s3[i].put_object(Bucket=target.bucket, Key=key, Body=body)
        return size * len(keys[i])

    def get(i: int) -> int:
        moved = 0
        for key in keys[i]:
            stream = s3[i].get_object(Bucket=target.bucket, Key=key)["Body"]
            with open(workdir / f"get-{i}", "wb") as out:
                while chunk := stream.read(COPY_CHUNK):
                    out.write(chunk)
                    moved += len(chunk)
        return moved

    try:
        put_s, put_bytes = _phase(clients, put)
        get_s, get_bytes = _phase(clients, get)
    finally:
        for i in range(clients):
            s3[i].delete_objects(Bucket=target.bucket, Delete={"Objects": [{"Key": k} for k in keys[i]], "Quiet": True})
            (workdir / f"get-{i}").unlink(missing_ok=True)
    if get_bytes != put_bytes:
        raise RuntimeError(f"read back {get_bytes} bytes of {put_bytes} from {target.endpoint_url}")
    return Throughput(_mbps(put_bytes, put_s), _mbps(get_bytes, get_s), put_bytes)


def file_aggregate(source: Path, workdir: Path, *, clients: int = 4, objects_per_client: int = 2) -> Throughput:
    """The yardstick: the same threads copy the same bytes file to file ("put": source to a
    stored file; "get": stored file to an output file), no HTTP, no boto3."""
    size = source.stat().st_size
    stored = [[workdir / f"stored-{i}-{j}" for j in range(objects_per_client)] for i in range(clients)]

    def copy(src: Path, dst: Path) -> int:
        # Python-level chunked copy, as a server or client must do; no kernel shortcut.
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            shutil.copyfileobj(fin, fout, COPY_CHUNK)
        return size

    try:
        put_s, put_bytes = _phase(clients, lambda i: sum(copy(source, dst) for dst in stored[i]))
        get_s, get_bytes = _phase(clients, lambda i: sum(copy(src, workdir / f"out-{i}") for src in stored[i]))
    finally:
        for path in workdir.glob("stored-*"):
            path.unlink()
        for path in workdir.glob("out-*"):
            path.unlink()
    return Throughput(_mbps(put_bytes, put_s), _mbps(get_bytes, get_s), put_bytes)
