"""The user's application code as a content-addressed bundle, and its install on an agent.

A ``module:attr`` app lives in the user's working directory, not in the project the agents
run. Before a job, the coordinator packs the app's top-level module or package (found exactly
as :func:`sonic.app.load_app` found it), the extra files listed in ``app.files`` and a
manifest holding ``app.requirements`` into a deterministic ``.tar.gz`` named by the SHA-256 of
its bytes. Agents unpack it into ``DATA_DIR/apps/<digest>/`` and run the app's workers there
(cwd and ``sys.path``), so an unchanged app is never sent twice and a changed one gets a new
directory: the spec the agents see is ``module:attr@<digest>``, which also keys their warm
worker pools, so workers of an old version are never reused.

Built-in workloads and modules of the project itself are not bundled: the agents already
run that code (see :mod:`sonic.cluster.codebundle`). Neither is a module installed into
site-packages: declare it in ``app.requirements`` instead.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sonic.app import BUILTIN_WORKLOADS, App

# The versioned-spec half lives in the core (load_app needs it); split_spec is used as
# appcode.split_spec by the agent.
from sonic.appversion import (  # noqa: F401
    APPS_DIR_ENV,
    COMPLETE,
    DEPS_DIR,
    HASH_DIGITS,
    VERSION_SEP,
    AppCodeError,
    code_dir,
    split_spec,
)
from sonic.cluster.codebundle import source_files
from sonic.errors import AppDefinitionError

MANIFEST = ".sonic-app.json"
# Bundles travel inside one protocol frame (sonic.runtime.protocol.MAX_FRAME is 8 MiB); data
# belongs in the run's input, not in the code.
MAX_BUNDLE_BYTES = 7 * 1024 * 1024
PROJECT_PACKAGES = frozenset({"sonic", "profiler", "models", "workloads"})
# pip may have to download wheels on a real VM; bound it so a wedged index cannot hang a job.
PIP_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class AppBundle:
    spec: str                        # module:attr as given by the user
    digest: str                      # sha256 of ``archive``, HASH_DIGITS hex digits
    archive: bytes
    files: tuple[str, ...]           # archive members, for messages and tests
    requirements: tuple[str, ...]

    @property
    def versioned_spec(self) -> str:
        return f"{self.spec}{VERSION_SEP}{self.digest}"


# ---------------------------------------------------------------------------- build (client)

def _module_name(app_spec: str) -> str | None:
    target = BUILTIN_WORKLOADS.get(app_spec, app_spec)
    if app_spec in BUILTIN_WORKLOADS or ":" not in target:
        return None
    return target.partition(":")[0]


def _installed(path: Path) -> bool:
    """Is ``path`` inside this interpreter's site-packages (an installed distribution)?"""
    roots = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}
    return any(path.is_relative_to(Path(root).resolve()) for root in roots) or "site-packages" in path.parts


def app_sources(app_spec: str, app: App) -> tuple[Path, list[Path]] | None:
    """(root directory, member paths relative to it) of the app's code, or None when the
    agents already have it (a built-in workload, the project itself, an installed package)."""
    module_name = _module_name(app_spec)
    if module_name is None:
        return None
    top = module_name.split(".")[0]
    if top in PROJECT_PACKAGES:
        return None
    module = sys.modules.get(top)
    if module is None:
        # The caller built the App itself and names a module only the agents have (put there
        # by the caller, as experiments/synthetic.py does): nothing here to ship.
        return None
    paths = list(getattr(module, "__path__", []) or [])
    if paths:                                   # a package: ship its whole directory
        base = Path(paths[0]).resolve()
    elif getattr(module, "__file__", None):     # a single module file
        base = Path(str(module.__file__)).resolve()
    else:
        raise AppDefinitionError(f"app {app_spec!r}: module {top!r} has no file to ship to the VMs")
    if _installed(base):
        return None
    root = base.parent
    members = source_files(base, root)
    for extra in app.files:
        path = (root / extra).resolve()
        if not path.is_relative_to(root) or not path.exists():
            raise AppDefinitionError(
                f"app {app_spec!r}: app.files entry {extra!r} is not a file or directory under {root}; "
                "list paths relative to the directory of the app's module"
            )
        members += source_files(path, root)
    return root, sorted(set(members), key=lambda p: p.as_posix())


def build_app_bundle(app_spec: str, app: App) -> AppBundle | None:
    """Pack the app's code (None if the agents already have it). Deterministic: the same
    content gives the same bytes and so the same digest."""
    found = app_sources(app_spec, app)
    if found is None:
        return None
    root, members = found
    requirements = tuple(str(r) for r in app.requirements)
    manifest = json.dumps({"spec": app_spec, "requirements": list(requirements)}, sort_keys=True).encode()
    buf = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        entries = [(rel.as_posix(), (root / rel).read_bytes(), (root / rel).stat().st_mode) for rel in members]
        entries.append((MANIFEST, manifest, 0o644))
        for name, data, mode in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if mode & 0o111 else 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    archive = buf.getvalue()
    if len(archive) > MAX_BUNDLE_BYTES:
        raise AppDefinitionError(
            f"app {app_spec!r}: its code bundle from {root} is {len(archive) / 1e6:.1f} MB compressed, over the "
            f"{MAX_BUNDLE_BYTES / 1e6:.0f} MB limit; move data out of the module's directory (pass it as --input)"
        )
    digest = hashlib.sha256(archive).hexdigest()[:HASH_DIGITS]
    return AppBundle(app_spec, digest, archive, tuple(m.as_posix() for m in members), requirements)


# ---------------------------------------------------------------------------- install (agent)

def is_installed(apps_dir: Path, digest: str) -> bool:
    return (code_dir(apps_dir, digest) / COMPLETE).is_file()


def _safe_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    members = tar.getmembers()
    for m in members:
        parts = Path(m.name).parts
        if not (m.isfile() or m.isdir()) or m.name.startswith("/") or ".." in parts:
            raise AppCodeError(f"app bundle member {m.name!r} is not a plain relative file; refusing to unpack")
    return members


def install_bundle(apps_dir: Path, digest: str, archive: bytes, vm: str) -> Path:
    """Verify, unpack and (if needed) pip-install requirements; atomic: a half-installed
    version is never used. Returns the code directory."""
    target = code_dir(apps_dir, digest)
    if hashlib.sha256(archive).hexdigest()[:HASH_DIGITS] != digest:
        raise AppCodeError(f"app bundle for {digest} arrived corrupt on VM {vm}; run again")
    tmp = apps_dir / f"{digest}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            tar.extractall(tmp, members=_safe_members(tar))  # noqa: S202 - members checked above
        manifest = json.loads((tmp / MANIFEST).read_text())
        requirements = [str(r) for r in manifest.get("requirements", [])]
        missing = unsatisfied(requirements)
        if missing:
            _pip_install(missing, tmp / DEPS_DIR, vm, str(manifest.get("spec", "")))
        (tmp / COMPLETE).touch()
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def unsatisfied(requirements: list[str]) -> list[str]:
    """Requirements this interpreter does not already satisfy (so nothing is downloaded for
    packages the VM has)."""
    from importlib import metadata

    from packaging.requirements import InvalidRequirement, Requirement

    missing: list[str] = []
    for text in requirements:
        try:
            req = Requirement(text)
        except InvalidRequirement as exc:
            raise AppCodeError(f"app.requirements entry {text!r} is not a pip requirement ({exc})") from None
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            missing.append(text)
            continue
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            missing.append(text)
    return missing


def _pip_install(requirements: list[str], target: Path, vm: str, spec: str) -> None:
    argv = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input",
            "--target", str(target), *requirements]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise AppCodeError(
            f"VM {vm}: pip install of {' '.join(requirements)} for app {spec} took over {PIP_TIMEOUT_S:g}s; "
            f"install them on the VM by hand ({sys.executable} -m pip install ...)"
        ) from None
    if done.returncode != 0:
        last = next((line for line in reversed((done.stderr or done.stdout).splitlines()) if line.strip()), "")
        raise AppCodeError(
            f"VM {vm}: cannot install app.requirements {' '.join(requirements)} for app {spec} ({last.strip()}); "
            f"fix the requirement or install it on the VM: {sys.executable} -m pip install {' '.join(requirements)}"
        )


def runtime_facts() -> dict[str, Any]:
    """What the client checks against its own interpreter."""
    return {"python": platform.python_version()}


# ---------------------------------------------------------------------------- agent side

_install_lock = threading.Lock()


def handle_install(apps_dir: Path, req: dict[str, Any], vm: str) -> dict[str, Any]:
    """The agent's ``app_install {digest, [archive]}``: answer whether that version is there
    (``missing: true`` asks for the archive), install it if the archive came along. The reply
    carries this VM's Python version for the client's check."""
    digest = req.get("digest")
    if not isinstance(digest, str):
        raise AppCodeError("app_install: field 'digest' must be a string")
    # Workers started from now on inherit where the shipped code lives.
    os.environ[APPS_DIR_ENV] = str(apps_dir)
    facts = runtime_facts()
    with _install_lock:
        if is_installed(apps_dir, digest):
            return {"ok": True, "installed": False, **facts}
        archive = req.get("archive")
        if archive is None:
            return {"ok": True, "missing": True, **facts}
        if not isinstance(archive, bytes):
            raise AppCodeError("app_install: field 'archive' must be bytes")
        install_bundle(apps_dir, digest, archive, vm)
    return {"ok": True, "installed": True, **facts}

