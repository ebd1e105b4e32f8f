"""The project as a source archive, for shipping to VMs over SFTP.

The archive holds the packages ``sonic``, ``profiler``, ``models``, ``workloads`` and
``pyproject.toml``. It is deterministic (sorted entries, zeroed mtimes and owners), named by
the hash of its content, and cached: rebuilding with unchanged sources reuses the file, and a
VM that already unpacked that hash skips the upload.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import sonic

PACKAGES = ("sonic", "profiler", "models", "workloads")
EXTRA_FILES = ("pyproject.toml",)
# Build leftovers and editor/VCS state are not part of the program.
EXCLUDED_DIRS = {"__pycache__", ".git", ".pytest_cache", ".hypothesis", ".mypy_cache", ".sonic"}
EXCLUDED_SUFFIXES = (".pyc", ".pyo", ".tmp", ".swp")
# The hash names directories on the VM; 16 hex digits (64 bits) cannot collide by accident.
HASH_DIGITS = 16


@dataclass(frozen=True)
class CodeBundle:
    digest: str          # content hash, HASH_DIGITS hex digits
    path: Path           # the .tar.gz on this machine
    files: int


def project_root() -> Path:
    """The directory holding the ``sonic`` package (and pyproject.toml)."""
    return Path(sonic.__file__).resolve().parent.parent


def source_files(base: Path, root: Path) -> list[Path]:
    """Files of ``base`` (a file or a directory tree) worth shipping, relative to ``root``:
    no caches, VCS or Sonic stores, no bytecode or temporary files. Shared by Sonic's own
    bundle and the user's app code (:mod:`sonic.runtime.appcode`)."""
    if base.is_file():
        return [base.relative_to(root)]
    found: list[Path] = []
    for path in base.rglob("*"):
        rel = path.relative_to(root)
        if any(part in EXCLUDED_DIRS or part.endswith(".egg-info") for part in rel.parts):
            continue
        if path.is_file() and not path.name.endswith(EXCLUDED_SUFFIXES):
            found.append(rel)
    return found


def _members(root: Path) -> list[Path]:
    found: list[Path] = []
    for package in PACKAGES:
        base = root / package
        if base.is_dir():
            found += source_files(base, root)
    found += [Path(name) for name in EXTRA_FILES if (root / name).is_file()]
    return sorted(found, key=lambda p: p.as_posix())


def build_bundle(cache_dir: Path, root: Path | None = None) -> CodeBundle:
    """Archive the project into ``cache_dir`` (reusing a cached archive of the same content)."""
    root = (root or project_root()).resolve()
    members = _members(root)
    hasher = hashlib.sha256()
    contents: list[tuple[Path, bytes, int]] = []
    for rel in members:
        data = (root / rel).read_bytes()
        mode = 0o755 if (root / rel).stat().st_mode & 0o111 else 0o644
        hasher.update(rel.as_posix().encode() + b"\0" + str(mode).encode() + b"\0")
        hasher.update(hashlib.sha256(data).digest())
        contents.append((rel, data, mode))
    digest = hasher.hexdigest()[:HASH_DIGITS]
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / f"sonic-src-{digest}.tar.gz"
    if target.is_file():
        return CodeBundle(digest, target, len(contents))
    buf = io.BytesIO()
    # mtime=0 in the gzip header too, so equal content gives byte-identical archives.
    with (
        gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for rel, data, mode in contents:
            info = tarfile.TarInfo(rel.as_posix())
            info.size = len(data)
            info.mode = mode
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")  # concurrent builders never share a temp file
    tmp.write_bytes(buf.getvalue())
    tmp.replace(target)
    return CodeBundle(digest, target, len(contents))
