"""Object keys and the agent's local object store.

An object is a file produced by a stage instance; its key is ``STAGE/INSTANCE/NAME`` inside a
job. Keys arrive from the network, so every component is validated and the resolved path must
stay under the store root (no ``..``, no absolute paths, no symlink escape).
"""

from __future__ import annotations

import os
import re
import shutil
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
