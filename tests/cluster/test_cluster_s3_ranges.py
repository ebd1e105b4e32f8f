"""Ranged reads of partitioned outputs (issue 12) against the real embedded S3 server
(sonic.emulation.s3server, in its own process) through boto3 and ``RemoteStore``."""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from sonic.emulation.procs import backoff, pid_alive, spawn, stop_pid, tail
from sonic.emulation.s3server import EMBEDDED_S3_CREDENTIALS

BUCKET = "sonic-ranges"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    d = tmp_path_factory.mktemp("s3")
    ready = d / "ready.json"
    proc = spawn([sys.executable, "-m", "sonic.emulation.s3server", "--port", "0", "--bucket", BUCKET,
                  "--ready-file", str(ready), "--data-dir", str(d / "data")], log=d / "s3.log",
                 env={**os.environ, **EMBEDDED_S3_CREDENTIALS})  # never a key pair leaked by another test
    try:
        for _ in backoff(time.monotonic() + 30):
            if ready.exists():
                break
            assert proc.poll() is None, tail(d / "s3.log")
        yield json.loads(ready.read_text())
    finally:
        stop_pid(proc.pid, str(d))
    assert not pid_alive(proc.pid)


def client(doc: dict[str, Any]) -> Any:
    return boto3.client("s3", endpoint_url=doc["endpoint_url"], region_name="us-east-1",
                        aws_access_key_id=EMBEDDED_S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=EMBEDDED_S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                        config=Config(retries={"max_attempts": 3, "mode": "standard"}))


def test_ranged_reads_of_a_multipart_pack_through_boto3(server: dict[str, Any], tmp_path: Path) -> None:
    """Partitioned outputs read one range each (issue 12): byte ranges inside one part, across
    the part boundary of a multipart object, at its ends and empty, through boto3's ``Range=``
    and through ``RemoteStore.download(offset=...)``, which verifies each partition's checksum."""
    from sonic.errors import CorruptObjectError
    from sonic.runtime.objects import pack_outputs
    from sonic.runtime.remote import RemoteSettings, RemoteStore

    part_mib = 5 * 1024 * 1024
    sizes = [1, part_mib - 7, 0, 13, 3 * 1024 * 1024, 100_003]   # the second and fifth straddle no/one boundary
    rng = random.Random(5)
    for i, size in enumerate(sizes):
        (tmp_path / f"part-{i}").write_bytes(rng.randbytes(size))
    whole = b"".join((tmp_path / f"part-{i}").read_bytes() for i in range(len(sizes)))
    expect = {f"part-{i}": (tmp_path / f"part-{i}").read_bytes() for i in range(len(sizes))}
    pack = pack_outputs(tmp_path, [f"part-{i}" for i in range(len(sizes))])
    assert (tmp_path / "_packed").read_bytes() == whole and pack.size == len(whole)
    store = RemoteStore(RemoteSettings(BUCKET, server["endpoint_url"], multipart_threshold_mb=5,
                                       access_key=EMBEDDED_S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                                       secret_key=EMBEDDED_S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]))
    store.upload(tmp_path / "_packed", "job/p/0/_packed", pack.checksum)
    s3 = client(server)
    assert "-2" in s3.head_object(Bucket=BUCKET, Key="job/p/0/_packed")["ETag"]   # really multipart
    boundary = part_mib
    got = s3.get_object(Bucket=BUCKET, Key="job/p/0/_packed", Range=f"bytes={boundary - 10}-{boundary + 9}")
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206 and got["Body"].read() == whole[boundary - 10:boundary + 10]
    assert got["ContentRange"] == f"bytes {boundary - 10}-{boundary + 9}/{len(whole)}"
    for p in pack.partitions:
        dest = tmp_path / "got" / p.name
        store.download("job/p/0/_packed", dest, size=p.length, checksum=p.checksum, offset=p.offset)
        assert dest.read_bytes() == expect[p.name], p.name
    # A range whose bytes do not match the partition's checksum is refused, not kept.
    first = pack.partitions[1]
    with pytest.raises(CorruptObjectError):
        store.download("job/p/0/_packed", tmp_path / "bad", size=first.length, checksum=first.checksum,
                       offset=first.offset + 1)
    assert not (tmp_path / "bad").exists()
    s3.delete_object(Bucket=BUCKET, Key="job/p/0/_packed")
