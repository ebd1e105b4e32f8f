"""The embedded S3 server (sonic.emulation.s3server) through boto3, in its own process."""

from __future__ import annotations

import io
import json
import os
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

from sonic.emulation.procs import backoff, pid_alive, spawn, stop_pid, tail
from sonic.emulation.s3server import EMBEDDED_S3_CREDENTIALS, TokenBucket

BUCKET = "sonic-test"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    d = tmp_path_factory.mktemp("s3")
    ready = d / "ready.json"
    data = d / "data"
    proc = spawn([sys.executable, "-m", "sonic.emulation.s3server", "--port", "0", "--bucket", BUCKET,
                  "--ready-file", str(ready), "--fail-seed", "7", "--data-dir", str(data)], log=d / "s3.log")
    try:
        for _ in backoff(time.monotonic() + 30):
            if ready.exists():
                break
            assert proc.poll() is None, tail(d / "s3.log")
        doc = json.loads(ready.read_text())
        assert doc["pid"] == proc.pid
        yield {**doc, "data_dir": str(data)}
    finally:
        stop_pid(proc.pid, str(d))
        assert not pid_alive(proc.pid)
    # A clean stop removes every object file it stored.
    assert proc.wait(timeout=10) == 0, tail(d / "s3.log")
    assert list(data.iterdir()) == []


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

    result = subprocess.run([sys.executable, "-m", "sonic.emulation.s3server", "--fail-rate", "2"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--fail-rate" in result.stderr


# ----------------------------------------------------------------------------- the S3 subset

def test_ranged_get_and_conditions(server: dict[str, Any], behaviour: None) -> None:
    from botocore.exceptions import ClientError

    s3 = client(server)
    data = bytes(range(256)) * 40                                # 10,240 bytes
    etag = s3.put_object(Bucket=BUCKET, Key="r/obj", Body=data)["ETag"]
    got = s3.get_object(Bucket=BUCKET, Key="r/obj", Range="bytes=100-199")
    assert got["Body"].read() == data[100:200]
    assert got["ContentRange"] == f"bytes 100-199/{len(data)}" and got["ContentLength"] == 100
    assert s3.get_object(Bucket=BUCKET, Key="r/obj", Range="bytes=10000-")["Body"].read() == data[10000:]
    assert s3.get_object(Bucket=BUCKET, Key="r/obj", Range="bytes=-5")["Body"].read() == data[-5:]
    assert s3.get_object(Bucket=BUCKET, Key="r/obj", Range="bytes=10200-99999")["Body"].read() == data[10200:]
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=BUCKET, Key="r/obj", Range=f"bytes={len(data)}-")
    assert info.value.response["Error"]["Code"] == "InvalidRange"
    assert s3.get_object(Bucket=BUCKET, Key="r/obj", IfMatch=etag)["Body"].read() == data
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=BUCKET, Key="r/obj", IfMatch='"0000"')
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412


def test_metadata_and_head(server: dict[str, Any], behaviour: None) -> None:
    from botocore.exceptions import ClientError

    s3 = client(server)
    s3.put_object(Bucket=BUCKET, Key="m/obj", Body=b"abc", Metadata={"sonic-xxh3": "feed"}, ContentType="text/plain")
    head = s3.head_object(Bucket=BUCKET, Key="m/obj")
    assert head["ContentLength"] == 3 and head["Metadata"] == {"sonic-xxh3": "feed"}
    assert head["ContentType"] == "text/plain"
    with pytest.raises(ClientError) as info:
        s3.head_object(Bucket=BUCKET, Key="m/none")
    assert info.value.response["Error"]["Code"] == "404"
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=BUCKET, Key="m/none")
    assert info.value.response["Error"]["Code"] == "NoSuchKey"


def test_overwrite_and_delete(server: dict[str, Any], behaviour: None) -> None:
    from botocore.exceptions import ClientError

    s3 = client(server)
    s3.put_object(Bucket=BUCKET, Key="d/one", Body=b"first")
    s3.put_object(Bucket=BUCKET, Key="d/one", Body=b"second")
    assert s3.get_object(Bucket=BUCKET, Key="d/one")["Body"].read() == b"second"
    s3.delete_object(Bucket=BUCKET, Key="d/one")
    s3.delete_object(Bucket=BUCKET, Key="d/one")                 # idempotent, as in S3
    with pytest.raises(ClientError):
        s3.head_object(Bucket=BUCKET, Key="d/one")
    for i in range(5):
        s3.put_object(Bucket=BUCKET, Key=f"d/many/{i}", Body=b"x")
    answer = s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": f"d/many/{i}"} for i in range(5)]})
    assert sorted(d["Key"] for d in answer["Deleted"]) == [f"d/many/{i}" for i in range(5)]
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="d/")


def test_list_pagination_and_delimiter(server: dict[str, Any], behaviour: None) -> None:
    s3 = client(server)
    keys = sorted([f"p/{i:03d}" for i in range(25)] + ["p/sub/a", "p/sub/b", "p/z+odd key&<>"])
    for key in keys:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="p/", PaginationConfig={"PageSize": 10}))
    assert len(pages) == 3 and [p["KeyCount"] for p in pages] == [10, 10, 8]
    assert [o["Key"] for p in pages for o in p["Contents"]] == keys
    rolled = s3.list_objects_v2(Bucket=BUCKET, Prefix="p/", Delimiter="/")
    assert [c["Prefix"] for c in rolled["CommonPrefixes"]] == ["p/sub/"]
    assert len(rolled["Contents"]) == 26
    v1 = list(s3.get_paginator("list_objects").paginate(Bucket=BUCKET, Prefix="p/", PaginationConfig={"PageSize": 7}))
    assert [o["Key"] for p in v1 for o in p["Contents"]] == keys
    after = s3.list_objects_v2(Bucket=BUCKET, Prefix="p/", StartAfter="p/020")
    assert [o["Key"] for o in after["Contents"]] == [k for k in keys if k > "p/020"]


def test_multipart_low_level_and_abort(server: dict[str, Any], behaviour: None) -> None:
    from botocore.exceptions import ClientError

    s3 = client(server)
    part = 5 * 1024 * 1024
    pieces = [bytes([i]) * part for i in (1, 2)] + [b"tail"]
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="mp/obj", Metadata={"k": "v"})["UploadId"]
    etags = [s3.upload_part(Bucket=BUCKET, Key="mp/obj", UploadId=upload, PartNumber=n + 1, Body=body)["ETag"]
             for n, body in enumerate(pieces)]
    with pytest.raises(ClientError) as info:                    # parts out of order
        s3.complete_multipart_upload(Bucket=BUCKET, Key="mp/obj", UploadId=upload, MultipartUpload={
            "Parts": [{"PartNumber": 2, "ETag": etags[1]}, {"PartNumber": 1, "ETag": etags[0]}]})
    assert info.value.response["Error"]["Code"] == "InvalidPartOrder"
    done = s3.complete_multipart_upload(Bucket=BUCKET, Key="mp/obj", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": n + 1, "ETag": e} for n, e in enumerate(etags)]})
    assert done["ETag"].endswith('-3"')
    assert s3.get_object(Bucket=BUCKET, Key="mp/obj", Range=f"bytes={part - 2}-{part + 1}")["Body"].read() == b"\1\1\2\2"
    assert s3.head_object(Bucket=BUCKET, Key="mp/obj")["ContentLength"] == 2 * part + 4
    small = s3.create_multipart_upload(Bucket=BUCKET, Key="mp/small")["UploadId"]
    tags = [s3.upload_part(Bucket=BUCKET, Key="mp/small", UploadId=small, PartNumber=n, Body=b"tiny")["ETag"]
            for n in (1, 2)]
    with pytest.raises(ClientError) as info:
        s3.complete_multipart_upload(Bucket=BUCKET, Key="mp/small", UploadId=small, MultipartUpload={
            "Parts": [{"PartNumber": n, "ETag": t} for n, t in zip((1, 2), tags)]})
    assert info.value.response["Error"]["Code"] == "EntityTooSmall"
    s3.abort_multipart_upload(Bucket=BUCKET, Key="mp/small", UploadId=small)
    with pytest.raises(ClientError) as info:
        s3.upload_part(Bucket=BUCKET, Key="mp/small", UploadId=small, PartNumber=3, Body=b"late")
    assert info.value.response["Error"]["Code"] == "NoSuchUpload"


def test_buckets_create_head_delete(server: dict[str, Any], behaviour: None) -> None:
    from botocore.exceptions import ClientError

    s3 = client(server)
    s3.create_bucket(Bucket="other-bucket")
    s3.head_bucket(Bucket="other-bucket")
    s3.put_object(Bucket="other-bucket", Key="k", Body=b"x")
    with pytest.raises(ClientError) as info:
        s3.delete_bucket(Bucket="other-bucket")
    assert info.value.response["Error"]["Code"] == "BucketNotEmpty"
    s3.delete_object(Bucket="other-bucket", Key="k")
    s3.delete_bucket(Bucket="other-bucket")
    with pytest.raises(ClientError) as info:
        s3.head_bucket(Bucket="other-bucket")
    assert info.value.response["Error"]["Code"] == "404"


def test_only_the_clusters_credentials(server: dict[str, Any], behaviour: None) -> None:
    import urllib.error

    from botocore.exceptions import ClientError

    for key_id, secret, code in [("testing", "wrong", "SignatureDoesNotMatch"),
                                 ("intruder", "testing", "InvalidAccessKeyId")]:
        s3 = boto3.client("s3", endpoint_url=server["endpoint_url"], region_name="us-east-1",
                          aws_access_key_id=key_id, aws_secret_access_key=secret,
                          config=Config(retries={"max_attempts": 1}))
        with pytest.raises(ClientError) as info:
            s3.put_object(Bucket=BUCKET, Key="intruder", Body=b"x")
        assert info.value.response["Error"]["Code"] == code
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(f"{server['endpoint_url']}/{BUCKET}?list-type=2", timeout=10)
    assert anonymous.value.code == 403
    with pytest.raises(ClientError):
        client(server).head_object(Bucket=BUCKET, Key="intruder")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _stored_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def test_memory_flat_in_stored_volume(server: dict[str, Any], behaviour: None, tmp_path: Path) -> None:
    s3 = client(server)
    chunk = 20 * 1024 * 1024
    source = tmp_path / "blob"
    source.write_bytes(os.urandom(1024 * 1024) * 20)
    cfg = TransferConfig(multipart_threshold=8 * 1024 * 1024, multipart_chunksize=8 * 1024 * 1024)
    s3.upload_file(str(source), BUCKET, "mem/warmup", Config=cfg)       # warm every code path once
    with open(source, "rb") as body:
        s3.put_object(Bucket=BUCKET, Key="mem/warmup-single", Body=body)
    baseline = _rss_mb(server["pid"])
    for i in range(10):                                                 # 200 MB more, both ways
        if i % 2:
            s3.upload_file(str(source), BUCKET, f"mem/{i}", Config=cfg)
        else:
            with open(source, "rb") as body:
                s3.put_object(Bucket=BUCKET, Key=f"mem/{i}", Body=body)
    after = _rss_mb(server["pid"])
    assert _stored_bytes(Path(server["data_dir"])) >= 12 * chunk       # the bytes are on disk ...
    assert after - baseline < 40, (baseline, after)                     # ... not in the server
    out = tmp_path / "back"
    s3.download_file(BUCKET, "mem/3", str(out), Config=cfg)
    assert out.read_bytes() == source.read_bytes()
    s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": f"mem/{i}"} for i in range(10)]})
