"""Remote-Storage: objects in S3 (or any S3-compatible endpoint) through boto3.

Large objects go multipart (boto3's managed transfer, several connections); every object
carries its xxh3 checksum as user metadata and downloads are verified against it.

Retries: one policy, botocore's ``standard`` mode, retries each HTTP request: throttling
(``503 SlowDown`` and friends), 500/502/503/504 and connection errors, with jittered
exponential backoff, ``max_attempts`` retries. A whole operation (an upload, a download, a
listing) is tried again, ``operation_attempts`` times with full-jitter backoff, only for what
botocore did not retry to the end: a request it gave up on early because its retry quota was
drained by a burst of throttling, or a transfer that broke half-way (a connection lost in a
streamed body, s3transfer's own give-up). An error that botocore already retried
``max_attempts`` times is final, so attempts never multiply (up to 9 x 4 = 36 requests
before). Client errors (403, 404, bad bucket) are never retried.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import boto3
import boto3.exceptions
import botocore.config
import botocore.exceptions
from boto3.s3.transfer import TransferConfig

from sonic.cluster.s3auth import cluster_credentials
from sonic.cluster.spec import ClusterSpec
from sonic.errors import CorruptObjectError, MissingObjectError, TransportError
from sonic.runtime.objects import file_checksum
from sonic.runtime.protocol import read_secret

log = logging.getLogger("sonic.remote")
T = TypeVar("T")
# S3 error codes worth another try (the HTTP status alone misses throttling sent as 400).
RETRYABLE_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout",
                             "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable", "RequestLimitExceeded"})
MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


def _client_error(exc: BaseException) -> botocore.exceptions.ClientError | None:
    """The ClientError behind ``exc`` (boto3's managed transfer wraps it in its own errors)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, botocore.exceptions.ClientError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def is_retryable(exc: BaseException) -> bool:
    """Throttling, 5xx, timeouts and broken connections: yes; anything the caller got wrong: no."""
    client_error = _client_error(exc)
    if client_error is not None:
        code = str(client_error.response.get("Error", {}).get("Code", ""))
        status = int(client_error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return status >= 500 or code in RETRYABLE_CODES
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError,
                             ConnectionError, TimeoutError)):
            return True
        if type(seen).__name__ == "RetriesExceededError":  # s3transfer's, after its own stream retries
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def retried_to_the_end(exc: BaseException, max_attempts: int) -> bool:
    """Whether botocore already spent all its ``max_attempts`` retries on this error response
    (its ``RetryAttempts``; botocore's max_attempts counts retries after the first request):
    trying the operation again would multiply the attempts."""
    client_error = _client_error(exc)
    if client_error is None:
        return False  # no response: a connection or transfer broken half-way
    retries = int(client_error.response.get("ResponseMetadata", {}).get("RetryAttempts") or 0)
    return retries >= max_attempts


def is_missing(exc: BaseException) -> bool:
    client_error = _client_error(exc)
    return client_error is not None and str(client_error.response.get("Error", {}).get("Code", "")) in MISSING_CODES

CHECKSUM_META = "sonic-xxh3"


@dataclass(frozen=True)
class RemoteSettings:
    bucket: str
    endpoint_url: str | None = None
    region: str = "us-east-1"
    multipart_threshold_mb: int = 16
    max_attempts: int = 8               # retries per HTTP request (botocore standard mode)
    operation_attempts: int = 4         # per upload/download/listing, for what botocore did not retry to the end
    backoff_base_s: float = 0.2         # operation retry n waits uniform(0, min(cap, base * 2**n))
    backoff_cap_s: float = 5.0
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    concurrency: int = 4
    access_key: str | None = None      # None: boto3's usual credential chain
    secret_key: str | None = None

    @classmethod
    def for_cluster(cls, cluster: ClusterSpec) -> RemoteSettings:
        """Settings of a cluster's remote storage; a local cluster's embedded S3 takes the key
        pair derived from the cluster secret (:func:`sonic.cluster.s3auth.cluster_credentials`)."""
        rs = cluster.remote_storage
        if cluster.local is not None and cluster.secret_file:
            pair = cluster_credentials(read_secret(cluster.secret_file))
            return cls(rs.bucket, rs.endpoint_url, rs.region, rs.multipart_threshold_mb,
                       access_key=pair["AWS_ACCESS_KEY_ID"], secret_key=pair["AWS_SECRET_ACCESS_KEY"])
        return cls(rs.bucket, rs.endpoint_url, rs.region, rs.multipart_threshold_mb)


#: Bytes per read when streaming a GET body to a file (never the whole object in memory).
STREAM_CHUNK = 1 << 20


class RemoteStore:
    def __init__(self, settings: RemoteSettings) -> None:
        self.settings = settings
        config = botocore.config.Config(
            region_name=settings.region,
            retries={"max_attempts": settings.max_attempts, "mode": "standard"},
            connect_timeout=settings.connect_timeout_s,
            read_timeout=settings.read_timeout_s,
            max_pool_connections=max(10, settings.concurrency * 4),
        )
        session = boto3.session.Session(aws_access_key_id=settings.access_key,
                                        aws_secret_access_key=settings.secret_key)
        self.client = session.client("s3", endpoint_url=settings.endpoint_url, config=config)
        # Best-effort housekeeping (a job's scratch objects after the run) tries each request
        # once: with the store gone (its server stopped by the same Ctrl-C), the retrying
        # client held `sonic run` in backoff for minutes after the job had ended.
        self._once = session.client("s3", endpoint_url=settings.endpoint_url,
                                    config=config.merge(botocore.config.Config(retries={"max_attempts": 0})))
        chunk = settings.multipart_threshold_mb * 1024 * 1024
        self.transfer = TransferConfig(multipart_threshold=chunk, multipart_chunksize=chunk,
                                       max_concurrency=settings.concurrency, use_threads=True)

    @property
    def where(self) -> str:
        return f"s3://{self.settings.bucket} at {self.settings.endpoint_url or 'AWS'}"

    def _retrying(self, what: str, operation: Callable[[], T], cleanup: Callable[[], None] | None = None) -> T:
        """Run ``operation``, retrying retryable failures with full-jitter exponential backoff;
        raise TransportError (MissingObjectError for a 404) naming ``what`` when it gives up."""
        attempts = max(1, self.settings.operation_attempts)
        for attempt in range(attempts):
            try:
                return operation()
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError,
                    boto3.exceptions.S3UploadFailedError, boto3.exceptions.RetriesExceededError) as exc:
                if cleanup is not None:
                    cleanup()
                if is_missing(exc):
                    raise MissingObjectError(f"{what}: no such object in {self.where}") from None
                final = not is_retryable(exc) or retried_to_the_end(exc, self.settings.max_attempts)
                if final or attempt == attempts - 1:
                    tries = f" after {attempt + 1} attempts" if attempt else ""
                    raise TransportError(f"{what} failed{tries}: {exc}") from None
                delay = random.uniform(0.0, min(self.settings.backoff_cap_s, self.settings.backoff_base_s * 2 ** attempt))
                log.warning("%s failed (%s); retry %d/%d in %.2fs", what, exc, attempt + 1, attempts - 1, delay)
                time.sleep(delay)  # the backoff itself: jittered, bounded, configured in RemoteSettings
        raise AssertionError("unreachable: the loop returns or raises")

    def ensure_bucket(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.settings.bucket)
        except botocore.exceptions.ClientError:
            try:
                self.client.create_bucket(Bucket=self.settings.bucket)
            except botocore.exceptions.ClientError as exc:
                raise TransportError(f"cannot create bucket {self.where}: {exc}") from None
        except botocore.exceptions.BotoCoreError as exc:
            raise TransportError(f"cannot reach {self.where}: {exc}") from None

    def upload(self, path: Path, key: str, checksum: str | None = None) -> float:
        """Upload a file; return seconds spent."""
        t0 = time.perf_counter()
        extra = {"Metadata": {CHECKSUM_META: checksum or file_checksum(path)}}
        self._retrying(f"upload of {key} to {self.where}", lambda: self.client.upload_file(
            str(path), self.settings.bucket, key, ExtraArgs=extra, Config=self.transfer))
        return time.perf_counter() - t0

    def download(self, key: str, path: Path, *, size: int | None = None, checksum: str | None = None,
                 offset: int | None = None) -> float:
        """Download and verify; return seconds spent. A mismatch removes the file and raises.
        With ``offset`` (and ``size``) only that byte range, in one ranged GET (HTTP ``Range``):
        one partition of a packed object; an empty range costs no request."""
        t0 = time.perf_counter()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        if offset is not None and size is None:
            raise ValueError("a ranged download needs the size of the range")

        def fetch() -> None:
            if offset is not None and size is not None:
                if size == 0:
                    tmp.write_bytes(b"")
                else:
                    self._get_to_file(key, tmp, f"bytes={offset}-{offset + size - 1}")
            elif size is not None and size < self.transfer.multipart_threshold:
                # One GET streamed to the file: boto3's download_file first sends a HEAD to
                # learn the size (which we know), doubling the latency of small objects.
                self._get_to_file(key, tmp)
            else:
                self.client.download_file(self.settings.bucket, key, str(tmp), Config=self.transfer)

        self._retrying(f"download of {key} from {self.where}", fetch, cleanup=lambda: tmp.unlink(missing_ok=True))
        got_size = tmp.stat().st_size
        if size is not None and got_size != size:
            tmp.unlink(missing_ok=True)
            raise CorruptObjectError(f"object {key} from {self.where} has {got_size} bytes, expected {size}")
        if checksum and file_checksum(tmp) != checksum:
            tmp.unlink(missing_ok=True)
            raise CorruptObjectError(f"object {key} from {self.where} failed its checksum; it is corrupt")
        tmp.rename(path)
        return time.perf_counter() - t0

    def _get_to_file(self, key: str, path: Path, byte_range: str | None = None) -> None:
        extra = {"Range": byte_range} if byte_range else {}
        body = self.client.get_object(Bucket=self.settings.bucket, Key=key, **extra)["Body"]
        try:
            with open(path, "wb") as fh:
                for chunk in body.iter_chunks(STREAM_CHUNK):
                    fh.write(chunk)
        finally:
            body.close()

    def delete_prefix(self, prefix: str, *, best_effort: bool = False) -> int:
        """Delete every object under ``prefix``; return how many. ``best_effort``: one try of
        each request, no retries (cleanup that must not hold the caller when the store is gone)."""
        client = self._once if best_effort else self.client

        def delete_all() -> int:
            # Idempotent, so a retry after a half-done pass simply deletes what is left.
            deleted = 0
            paginator = client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.settings.bucket, Prefix=prefix):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    client.delete_objects(Bucket=self.settings.bucket, Delete={"Objects": keys, "Quiet": True})
                    deleted += len(keys)
            return deleted

        what = f"cleaning {prefix} in {self.where}"
        if best_effort:
            try:
                return delete_all()
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
                raise TransportError(f"{what} failed: {exc}") from None
        return self._retrying(what, delete_all)
