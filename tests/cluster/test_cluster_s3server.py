"""The embedded S3 server (sonic.cluster.s3server) through boto3, in its own process."""

from __future__ import annotations

import io
import json
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from sonic.cluster.procs import backoff, pid_alive, spawn, stop_pid, tail
from sonic.cluster.s3server import EMBEDDED_S3_CREDENTIALS, TokenBucket

BUCKET = "sonic-test"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    d = tmp_path_factory.mktemp("s3")
    ready = d / "ready.json"
    proc = spawn([sys.executable, "-m", "sonic.cluster.s3server", "--port", "0", "--bucket", BUCKET,
                  "--ready-file", str(ready), "--fail-seed", "7"], log=d / "s3.log")
    try:
        for _ in backoff(time.monotonic() + 30):
            if ready.exists():
                break
            assert proc.poll() is None, tail(d / "s3.log")
        doc = json.loads(ready.read_text())
        assert doc["pid"] == proc.pid
        yield doc
    finally:
        stop_pid(proc.pid, str(d))
        assert not pid_alive(proc.pid)


def client(doc: dict[str, Any], attempts: int = 3) -> Any:
    return boto3.client(
        "s3", endpoint_url=doc["endpoint_url"], region_name="us-east-1",
        aws_access_key_id=EMBEDDED_S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=EMBEDDED_S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        config=Config(retries={"max_attempts": attempts, "mode": "standard"}),
    )


def control(doc: dict[str, Any], what: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    url = f"{doc['endpoint_url']}/_sonic/{what}"
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                     method="PUT" if body is not None else "GET")
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.loads(response.read()))


@pytest.fixture
def behaviour(server: dict[str, Any]) -> Iterator[None]:
    """Each test starts from a clean behaviour and leaves it clean."""
    neutral = {"latency_ms": 0, "fail_rate": 0, "mbps": None, "conn_mbps": None}
    control(server, "faults", neutral)
    yield
    control(server, "faults", neutral)


def test_bucket_created_put_get(server: dict[str, Any], behaviour: None) -> None:
    s3 = client(server)
    assert BUCKET in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.put_object(Bucket=BUCKET, Key="a/b.bin", Body=b"hello" * 1000)
    assert s3.get_object(Bucket=BUCKET, Key="a/b.bin")["Body"].read() == b"hello" * 1000
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="a/")["Contents"]]
    assert keys == ["a/b.bin"]


def test_multipart_upload(server: dict[str, Any], behaviour: None) -> None:
    s3 = client(server)
    data = bytes(range(256)) * (6 * 1024 * 1024 // 256 + 7)    # > 6 MiB: two 5 MiB parts
    cfg = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
    s3.upload_fileobj(io.BytesIO(data), BUCKET, "big.bin", Config=cfg)
    head = s3.head_object(Bucket=BUCKET, Key="big.bin")
    assert head["ContentLength"] == len(data)
    assert "-2" in head["ETag"]                                  # a multipart ETag names its parts
    out = io.BytesIO()
    s3.download_fileobj(BUCKET, "big.bin", out)
    assert out.getvalue() == data


def _timed_heads(s3: Any, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        s3.head_bucket(Bucket=BUCKET)
    return (time.perf_counter() - start) / n


def test_latency_adds_delay(server: dict[str, Any], behaviour: None) -> None:
    s3 = client(server)
    base = _timed_heads(s3, 5)
    control(server, "faults", {"latency_ms": 150})
    slow = _timed_heads(s3, 5)
    assert slow >= base + 0.14, (base, slow)


def test_fail_rate_gives_503_that_boto3_retries(
    server: dict[str, Any], behaviour: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.retries.standard import ExponentialBackoff

    # boto3 backs off up to seconds on SlowDown; what we check is that it retries at all.
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.0)
    s3 = client(server, attempts=12)
    before = control(server, "stats")
    control(server, "faults", {"fail_rate": 0.3})
    retries = 0
    for i in range(30):
        meta = s3.put_object(Bucket=BUCKET, Key=f"f/{i}", Body=b"x" * 100)["ResponseMetadata"]
        retries += meta["RetryAttempts"]
    after = control(server, "stats")
    failed = after["failed"] - before["failed"]
    assert failed > 0 and retries == failed, (failed, retries)
    assert len(s3.list_objects_v2(Bucket=BUCKET, Prefix="f/")["Contents"]) == 30


def test_503_is_slowdown_without_retries(server: dict[str, Any], behaviour: None) -> None:
    from botocore.exceptions import ClientError

    control(server, "faults", {"fail_rate": 1.0})
    with pytest.raises(ClientError) as info:
        client(server, attempts=1).put_object(Bucket=BUCKET, Key="never", Body=b"x" * 2000)
    assert info.value.response["Error"]["Code"] == "SlowDown"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    control(server, "faults", {"fail_rate": 0})
    # The drained request body left the keep-alive connection usable.
    client(server).put_object(Bucket=BUCKET, Key="after", Body=b"y")


def test_inprocess_bandwidth_limit(server: dict[str, Any], behaviour: None) -> None:
    s3 = client(server)
    data = b"z" * (2 * 1024 * 1024)
    s3.put_object(Bucket=BUCKET, Key="bw.bin", Body=data)
    control(server, "faults", {"mbps": 32})                     # 4 MB/s -> 2 MiB in ~0.5 s
    start = time.perf_counter()
    assert s3.get_object(Bucket=BUCKET, Key="bw.bin")["Body"].read() == data
    assert time.perf_counter() - start >= 0.4


def test_control_rejects_unknown_setting(server: dict[str, Any], behaviour: None) -> None:
    import urllib.error

    with pytest.raises(urllib.error.HTTPError) as info:
        control(server, "faults", {"bogus": 1})
    assert info.value.code == 400


def test_token_bucket_rate() -> None:
    bucket = TokenBucket(1_000_000, burst=10_000)
    start = time.perf_counter()
    for _ in range(30):
        bucket.take(10_000)                                     # 300 kB at 1 MB/s, 10 kB burst
    assert 0.25 <= time.perf_counter() - start < 1.0


def test_bad_fail_rate_is_refused(tmp_path: Path) -> None:
    import subprocess

    result = subprocess.run([sys.executable, "-m", "sonic.cluster.s3server", "--fail-rate", "2"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--fail-rate" in result.stderr
