"""Remote-Storage: objects in S3 (or any S3-compatible endpoint) through boto3.

Large objects go multipart (boto3's managed transfer, several connections); every object
carries its xxh3 checksum as user metadata and downloads are verified against it. Throttling,
5xx and timeouts are retried by botocore's ``standard`` retry mode with jittered backoff.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import boto3
import botocore.config
import botocore.exceptions
from boto3.s3.transfer import TransferConfig

from sonic.cluster.spec import ClusterSpec
from sonic.errors import TransportError
from sonic.runtime.objects import file_checksum

CHECKSUM_META = "sonic-xxh3"


@dataclass(frozen=True)
class RemoteSettings:
    bucket: str
    endpoint_url: str | None = None
    region: str = "us-east-1"
    multipart_threshold_mb: int = 16
    max_attempts: int = 8
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    concurrency: int = 4
    access_key: str | None = None      # None: boto3's usual credential chain
    secret_key: str | None = None

    @classmethod
    def for_cluster(cls, cluster: ClusterSpec) -> RemoteSettings:
        """Settings of a cluster's remote storage; a local cluster's embedded S3 takes its test keys."""
        rs = cluster.remote_storage
        keys: dict[str, str] = {}
        if cluster.local is not None:
            from sonic.cluster.local import EMBEDDED_S3_CREDENTIALS

            keys = {"access_key": EMBEDDED_S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                    "secret_key": EMBEDDED_S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]}
        return cls(rs.bucket, rs.endpoint_url, rs.region, rs.multipart_threshold_mb, **keys)


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
        chunk = settings.multipart_threshold_mb * 1024 * 1024
        self.transfer = TransferConfig(multipart_threshold=chunk, multipart_chunksize=chunk,
                                       max_concurrency=settings.concurrency, use_threads=True)

    @property
    def where(self) -> str:
        return f"s3://{self.settings.bucket} at {self.settings.endpoint_url or 'AWS'}"

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
        try:
            self.client.upload_file(str(path), self.settings.bucket, key, ExtraArgs=extra, Config=self.transfer)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError,
                boto3.exceptions.S3UploadFailedError) as exc:
            raise TransportError(f"upload of {key} to {self.where} failed: {exc}") from None
        return time.perf_counter() - t0

    def download(self, key: str, path: Path, *, size: int | None = None, checksum: str | None = None) -> float:
        """Download and verify; return seconds spent. A mismatch removes the file and raises."""
        t0 = time.perf_counter()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        try:
            self.client.download_file(self.settings.bucket, key, str(tmp), Config=self.transfer)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            tmp.unlink(missing_ok=True)
            raise TransportError(f"download of {key} from {self.where} failed: {exc}") from None
        got_size = tmp.stat().st_size
        if size is not None and got_size != size:
            tmp.unlink(missing_ok=True)
            raise TransportError(f"object {key} from {self.where} has {got_size} bytes, expected {size}")
        if checksum and file_checksum(tmp) != checksum:
            tmp.unlink(missing_ok=True)
            raise TransportError(f"object {key} from {self.where} failed its checksum; it is corrupt")
        tmp.rename(path)
        return time.perf_counter() - t0

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix``; return how many."""
        deleted = 0
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.settings.bucket, Prefix=prefix):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    self.client.delete_objects(Bucket=self.settings.bucket, Delete={"Objects": keys, "Quiet": True})
                    deleted += len(keys)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise TransportError(f"cleaning {prefix} in {self.where} failed: {exc}") from None
        return deleted
