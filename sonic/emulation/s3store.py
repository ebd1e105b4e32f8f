"""The embedded S3 server's object store: one file per object on disk, an index in memory.

Bodies never live in the server's memory: a PUT streams into a fresh file, a GET streams (or
``sendfile``s) out of one. Each PUT writes a new file and swaps the index entry, so a reader that
already opened the old file keeps reading a consistent object while a writer replaces it, as S3's
read-after-write semantics promise. The index (key -> size, ETag, metadata, files) costs a few
hundred bytes per object, whatever the object's size; keys are kept sorted for listings.

A multipart object is stored as its part files, renamed into place on completion and read back
one after the other: completing a 1 GB upload copies nothing (a concatenation would write every
byte a second time, and on this machine disk writes are what runs out first).

The store is ephemeral like the cloud emulation it replaces: it lives in a run directory that
``close()`` removes. Called from one event-loop thread; the heavy file work of completing a
multipart upload only renames files.
"""

from __future__ import annotations

import bisect
import builtins
import hashlib
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from sonic.errors import S3Error

# S3's rules (bucket naming, multipart part sizes and counts).
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PARTS = 10_000
MAX_KEY_BYTES = 1024


def no_such_bucket(name: str) -> S3Error:
    return S3Error(404, "NoSuchBucket", f"The specified bucket does not exist: {name}")


class Segment(NamedTuple):
    # A str, not a Path: the index holds one per object and a PosixPath costs ~4x the memory.
    path: str
    size: int


@dataclass(slots=True)
class ObjectInfo:
    key: str
    size: int
    etag: str                  # without quotes
    last_modified: float       # epoch seconds
    segments: list[Segment]    # the body is these files, in order (one unless multipart)
    content_type: str = "binary/octet-stream"
    metadata: dict[str, str] = field(default_factory=dict)     # x-amz-meta-* without the prefix


@dataclass
class Upload:
    upload_id: str
    bucket: str
    key: str
    directory: Path
    content_type: str
    metadata: dict[str, str]
    parts: dict[int, tuple[str, int]] = field(default_factory=dict)   # number -> (etag, size)


@dataclass
class Bucket:
    name: str
    created: float
    objects: dict[str, ObjectInfo] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)               # sorted, as S3 lists them


@dataclass
class Listing:
    objects: list[ObjectInfo]
    common_prefixes: list[str]
    truncated: bool
    last: str | None           # last key or prefix returned: where the next page starts


class ObjectStore:
    def __init__(self, root: Path) -> None:
        # A run directory of our own: never delete or reuse what someone else left in ``root``.
        self.root = root / f"run-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.tmp = self.root / "tmp"
        self.tmp.mkdir(parents=True)
        (self.root / "uploads").mkdir()
        self.buckets: dict[str, Bucket] = {}
        self.uploads: dict[str, Upload] = {}
        self._made: set[tuple[str, str]] = set()      # object subdirectories already created

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    # -- buckets -------------------------------------------------------------------

    def bucket(self, name: str) -> Bucket:
        found = self.buckets.get(name)
        if found is None:
            raise no_such_bucket(name)
        return found

    def create_bucket(self, name: str) -> None:
        if not BUCKET_NAME.match(name) or ".." in name:
            raise S3Error(400, "InvalidBucketName", f"The specified bucket is not valid: {name}")
        if name in self.buckets:
            raise S3Error(409, "BucketAlreadyOwnedByYou", f"Your previous request to create {name} succeeded")
        (self.root / "objects" / name).mkdir(parents=True)
        self.buckets[name] = Bucket(name, time.time())

    def delete_bucket(self, name: str) -> None:
        bucket = self.bucket(name)
        if bucket.keys or any(u.bucket == name for u in self.uploads.values()):
            raise S3Error(409, "BucketNotEmpty", f"The bucket you tried to delete is not empty: {name}")
        shutil.rmtree(self.root / "objects" / name, ignore_errors=True)
        self._made = {made for made in self._made if made[0] != name}
        del self.buckets[name]

    # -- objects -------------------------------------------------------------------

    def new_temp_file(self) -> str:
        # Strings, not Paths, on the per-request path: pathlib interns every name it parses,
        # and an interned-string table grown by millions of uuids never shrinks.
        return f"{self.tmp}/{uuid.uuid4().hex}"

    def _object_path(self, bucket: str) -> str:
        # Files are named by a fresh id, not by key: keys "a" and "a/b" coexist in S3 but not as
        # paths, and a fresh file per version lets readers of the old version finish undisturbed.
        name = uuid.uuid4().hex
        directory = f"{self.root}/objects/{bucket}/{name[:2]}"
        if (bucket, name[:2]) not in self._made:
            os.makedirs(directory, exist_ok=True)
            self._made.add((bucket, name[:2]))
        return f"{directory}/{name}"

    def commit(self, bucket_name: str, info: ObjectInfo) -> ObjectInfo:
        """Move ``info.segments`` (files written elsewhere in the store) into the bucket and make
        them the body of ``info.key``; replaces any previous version."""
        bucket = self.bucket(bucket_name)
        if len(info.key.encode()) > MAX_KEY_BYTES or not info.key:
            _unlink(info)
            raise S3Error(400, "KeyTooLongError" if info.key else "InvalidArgument", "bad object key")
        placed = []
        for segment in info.segments:
            target = self._object_path(bucket_name)
            os.replace(segment.path, target)
            placed.append(Segment(target, segment.size))
        info.segments = placed
        old = bucket.objects.get(info.key)
        bucket.objects[info.key] = info
        if old is None:
            bisect.insort(bucket.keys, info.key)
        else:
            _unlink(old)
        return info

    def get(self, bucket_name: str, key: str) -> ObjectInfo:
        info = self.bucket(bucket_name).objects.get(key)
        if info is None:
            raise S3Error(404, "NoSuchKey", "The specified key does not exist.")
        return info

    def delete(self, bucket_name: str, key: str) -> None:
        bucket = self.bucket(bucket_name)
        info = bucket.objects.pop(key, None)
        if info is None:
            return                                  # S3 deletes are idempotent
        index = bisect.bisect_left(bucket.keys, key)
        del bucket.keys[index]
        _unlink(info)

    def list(self, bucket_name: str, prefix: str, after: str, delimiter: str, max_keys: int) -> Listing:
        """Keys under ``prefix`` strictly after ``after``, with common prefixes rolled up."""
        bucket = self.bucket(bucket_name)
        keys = bucket.keys
        index = bisect.bisect_right(keys, after) if after >= prefix else bisect.bisect_left(keys, prefix)
        objects: list[ObjectInfo] = []
        prefixes: list[str] = []
        last: str | None = None
        while index < len(keys):
            key = keys[index]
            if not key.startswith(prefix):
                break
            if len(objects) + len(prefixes) >= max_keys:
                return Listing(objects, prefixes, True, last)
            cut = key.find(delimiter, len(prefix)) if delimiter else -1
            if cut >= 0:
                common = key[: cut + len(delimiter)]
                prefixes.append(common)
                last = common
                # Skip every key under this common prefix at once.
                index = bisect.bisect_left(keys, common[:-1] + chr(ord(common[-1]) + 1))
                continue
            objects.append(bucket.objects[key])
            last = key
            index += 1
        return Listing(objects, prefixes, False, last)

    # -- multipart -----------------------------------------------------------------

    def create_upload(self, bucket_name: str, key: str, content_type: str, metadata: dict[str, str]) -> Upload:
        self.bucket(bucket_name)
        upload_id = uuid.uuid4().hex
        directory = self.root / "uploads" / upload_id
        directory.mkdir()
        upload = Upload(upload_id, bucket_name, key, directory, content_type, metadata)
        self.uploads[upload_id] = upload
        return upload

    def upload(self, bucket_name: str, key: str, upload_id: str) -> Upload:
        upload = self.uploads.get(upload_id)
        if upload is None or upload.bucket != bucket_name or upload.key != key:
            raise S3Error(404, "NoSuchUpload", "The specified multipart upload does not exist.")
        return upload

    def commit_part(self, upload: Upload, number: int, written: str, etag: str, size: int) -> None:
        if not 1 <= number <= MAX_PARTS:
            _remove(written)
            raise S3Error(400, "InvalidArgument", f"Part number must be an integer between 1 and {MAX_PARTS}")
        if upload.upload_id not in self.uploads:            # aborted while the part streamed in
            _remove(written)
            raise S3Error(404, "NoSuchUpload", "The specified multipart upload does not exist.")
        os.replace(written, upload.directory / str(number))
        upload.parts[number] = (etag, size)

    # builtins.list: inside this class `list` names the listing method above.
    def check_completion(self, upload: Upload, listed: builtins.list[tuple[int, str]]) -> builtins.list[int]:
        """Validate the client's part list as S3 does; return the part numbers in order."""
        if not listed:
            raise S3Error(400, "MalformedXML", "You must specify at least one part")
        numbers = [n for n, _ in listed]
        if numbers != sorted(set(numbers)):
            raise S3Error(400, "InvalidPartOrder", "The list of parts was not in ascending order.")
        for position, (number, etag) in enumerate(listed):
            have = upload.parts.get(number)
            if have is None or have[0] != etag.strip('"'):
                raise S3Error(400, "InvalidPart", f"One or more of the specified parts could not be found: {number}")
            if have[1] < MIN_PART_SIZE and position < len(listed) - 1:
                raise S3Error(400, "EntityTooSmall", "Your proposed upload is smaller than the minimum allowed size")
        return numbers

    def assemble(self, upload: Upload, numbers: builtins.list[int]) -> tuple[builtins.list[Segment], str]:
        """The listed parts as the segments of one object, and its multipart ETag (S3's
        formula: MD5 of the parts' binary ETags, dash, part count)."""
        digest = hashlib.md5(usedforsecurity=False)
        segments = []
        for number in numbers:
            etag, part_size = upload.parts[number]
            digest.update(bytes.fromhex(etag))
            segments.append(Segment(str(upload.directory / str(number)), part_size))
        return segments, f"{digest.hexdigest()}-{len(numbers)}"

    def finish_upload(self, upload: Upload) -> None:
        """Forget the upload and remove whatever parts were not moved into an object."""
        self.uploads.pop(upload.upload_id, None)
        shutil.rmtree(upload.directory, ignore_errors=True)


def _unlink(info: ObjectInfo) -> None:
    for segment in info.segments:
        _remove(segment.path)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass                                        # already gone: nothing left to free
