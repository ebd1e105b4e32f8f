"""Object keys and the agent's local object store.

An object is a file produced by a stage instance; its key is ``STAGE/INSTANCE/NAME`` inside a
job. Keys arrive from the network, so every component is validated and the resolved path must
stay under the store root (no ``..``, no absolute paths, no symlink escape).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import xxhash

from sonic.app import APP_INPUT, OUTPUT_NAME_RE
from sonic.errors import UserInputError

JOB_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
STAGE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
CHUNK = 1 << 20


class BadKeyError(UserInputError):
    """An object key or job id that could escape the store or is malformed."""


def check_job(job: object) -> str:
    if not isinstance(job, str) or not JOB_RE.match(job):
        raise BadKeyError(f"invalid job id {job!r}: use 1-64 letters, digits, '_' or '-'")
    return job


def check_key(key: object) -> str:
    """Validate ``STAGE/INSTANCE/NAME``; return it unchanged."""
    if not isinstance(key, str):
        raise BadKeyError(f"object key must be a string, got {type(key).__name__}")
    parts = key.split("/")
    if len(parts) != 3:
        raise BadKeyError(f"object key {key!r} must have the form STAGE/INSTANCE/NAME")
    stage, instance, name = parts
    if not (STAGE_RE.match(stage) or stage == APP_INPUT):
        raise BadKeyError(f"object key {key!r}: invalid stage name {stage!r}")
    if not instance.isdigit() or len(instance) > 9:
        raise BadKeyError(f"object key {key!r}: instance must be a number")
    if not OUTPUT_NAME_RE.match(name) or name in {".", ".."}:
        raise BadKeyError(f"object key {key!r}: invalid file name {name!r}")
    return key


def file_checksum(path: Path) -> str:
    """xxh3-128 of a file: ~10 GB/s, so verifying never bottlenecks a transfer."""
    h = xxhash.xxh3_128()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK * 4):
            h.update(chunk)
    return h.hexdigest()


def range_checksum(path: Path, offset: int, length: int) -> str:
    """xxh3-128 of ``length`` bytes of ``path`` from ``offset`` (one partition of a pack)."""
    h = xxhash.xxh3_128()
    with open(path, "rb") as fh:
        fh.seek(offset)
        left = length
        while left > 0:
            chunk = fh.read(min(CHUNK * 4, left))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


#: Name of the one object a packing producer instance stores (its partitions, concatenated).
PACK_NAME = "_packed"
#: The pack's index beside it (JSON: name, size, checksum, partitions); not an object itself.
PACK_INDEX_SUFFIX = ".index.json"


@dataclass(frozen=True)
class Partition:
    """One named partition of a pack: ``length`` bytes at ``offset``, with its own checksum."""

    name: str
    offset: int
    length: int
    checksum: str


@dataclass(frozen=True)
class Pack:
    name: str
    size: int
    checksum: str                   # of the whole file (what an S3 upload carries)
    partitions: tuple[Partition, ...]


def pack_outputs(out_dir: Path, names: list[str], pack_name: str = PACK_NAME) -> Pack:
    """Concatenate the files ``names`` of ``out_dir`` (in that order) into ``out_dir/pack_name``,
    hashing every partition and the whole file in the same pass, write the index beside it and
    remove the partition files. One read and one write of the bytes: a shuffle then stores one
    object per producer instance instead of one per consumer."""
    if pack_name in names:
        raise ValueError(f"output name {pack_name!r} is reserved for packed outputs; rename that output")
    pack_path = out_dir / pack_name
    tmp = pack_path.with_name(pack_name + ".part")
    whole = xxhash.xxh3_128()
    partitions: list[Partition] = []
    offset = 0
    with open(tmp, "wb") as out:
        for name in names:
            h = xxhash.xxh3_128()
            length = 0
            with open(out_dir / name, "rb") as src:
                while chunk := src.read(CHUNK * 4):
                    h.update(chunk)
                    whole.update(chunk)
                    out.write(chunk)
                    length += len(chunk)
            partitions.append(Partition(name, offset, length, h.hexdigest()))
            offset += length
    tmp.rename(pack_path)
    pack = Pack(pack_name, offset, whole.hexdigest(), tuple(partitions))
    index = {"name": pack.name, "size": pack.size, "checksum": pack.checksum,
             "partitions": [[p.name, p.offset, p.length, p.checksum] for p in partitions]}
    (out_dir / (pack_name + PACK_INDEX_SUFFIX)).write_text(json.dumps(index))
    for name in names:
        (out_dir / name).unlink()
    return pack


def copy_range(src: Path, offset: int, length: int, dest: Path) -> None:
    """Copy one partition of a pack into its own file inside the kernel (``copy_file_range``:
    no user-space buffer; shared extents where the file system can reflink)."""
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        left, pos = length, offset
        while left > 0:
            n = os.copy_file_range(fin.fileno(), fout.fileno(), left, pos)
            if n == 0:
                raise OSError(f"{src} ended {left} bytes before the partition at {offset} (+{length})")
            pos += n
            left -= n


@dataclass(frozen=True)
class StoredObject:
    key: str
    path: Path
    size: int
    checksum: str


class ObjectStore:
    """Files under ``root/JOB/STAGE/INSTANCE/NAME``; outputs are written there in place."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._real_root = os.path.realpath(self.root)

    def path(self, job: str, key: str) -> Path:
        path = self.root / check_job(job) / check_key(key)
        real = os.path.realpath(path)
        if not real.startswith(self._real_root + os.sep):
            raise BadKeyError(f"object key {key!r} resolves outside the store; refusing")
        return path

    def instance_dir(self, job: str, stage: str, instance: int) -> Path:
        return self.path(job, f"{stage}/{instance}/x").parent

    def describe(self, job: str, key: str, checksum: str | None = None) -> StoredObject:
        path = self.path(job, key)
        if not path.is_file() or path.is_symlink():
            raise FileNotFoundError(f"no object {key!r} in job {job!r}")
        return StoredObject(key, path, path.stat().st_size, checksum or file_checksum(path))

    def drop_job(self, job: str) -> None:
        shutil.rmtree(self.root / check_job(job), ignore_errors=True)


StatSignature = tuple[int, int, int, int]


def stat_signature(path: Path) -> StatSignature:
    """(inode, size, mtime_ns, ctime_ns): any write, truncate, rename-over or chmod changes it
    (ctime cannot be set from user space), so an unchanged signature means unchanged bytes
    for everything short of corruption below the file system."""
    st = os.stat(path, follow_symlinks=False)
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True)
class Record:
    size: int
    checksum: str                 # as produced (or as first received): what peers are told
    verified: StatSignature       # the file's signature when its bytes last matched ``checksum``


class Checksums:
    """What the agent knows about its objects: recorded size/checksum, and when they were last
    verified against the bytes on disk.

    VM-Storage consumers read objects in place, so "verify on every transfer" means verify
    before every use. With ``trust_unchanged`` False (the default) every verification hashes
    the file (xxh3 reads ~3.5 GB/s from the page cache: far cheaper than the copy VM-Storage
    avoids), which also catches corruption below the file system. With it True a file is
    re-hashed only when its stat signature changed since it last verified (any modification
    through the file system, e.g. a consumer writing into its input in place).
    """

    def __init__(self, *, trust_unchanged: bool = False) -> None:
        self.trust_unchanged = trust_unchanged
        self._records: dict[tuple[str, str], Record] = {}
        # (job, pack key) -> offset -> (length, checksum): what a ranged get serves and vouches for
        self._ranges: dict[tuple[str, str], dict[int, tuple[int, str]]] = {}
        self._lock = threading.Lock()

    def remember_pack(self, job: str, key: str, pack: Pack) -> None:
        with self._lock:
            self._ranges[(job, key)] = {p.offset: (p.length, p.checksum) for p in pack.partitions}

    def range_record(self, job: str, key: str, offset: int) -> tuple[int, str] | None:
        """(length, checksum) of the partition at ``offset`` of pack ``key``, as produced."""
        with self._lock:
            return self._ranges.get((job, key), {}).get(offset)

    def remember(self, job: str, key: str, path: Path, size: int, checksum: str) -> None:
        """Record an object whose bytes were just hashed to ``checksum``."""
        with self._lock:
            self._records[(job, key)] = Record(size, checksum, stat_signature(path))

    def get(self, job: str, key: str) -> Record | None:
        with self._lock:
            return self._records.get((job, key))

    def verify(self, job: str, key: str, path: Path, checksum: str) -> bool:
        """Do the bytes at ``path`` match ``checksum``? (With ``trust_unchanged``, a file not
        modified since its last successful verification is not hashed again.)"""
        record = self.get(job, key)
        signature = stat_signature(path)
        if self.trust_unchanged and record is not None and record.verified == signature:
            return record.checksum == checksum
        actual = file_checksum(path)
        if actual != checksum:
            return False
        with self._lock:
            self._records[(job, key)] = Record(signature[1], checksum, signature)
        return True

    def forget_job(self, job: str) -> None:
        with self._lock:
            for k in [k for k in self._records if k[0] == job]:
                del self._records[k]
            for k in [k for k in self._ranges if k[0] == job]:
                del self._ranges[k]
