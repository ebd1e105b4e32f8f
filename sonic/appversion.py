"""Which version of a user's app a process loads: ``module:attr@<digest>`` and its directory.

The core half of shipping app code (the bundle itself is built and installed by
:mod:`sonic.runtime.appcode`): :func:`sonic.app.load_app` needs only to split a versioned spec
and make that version's directory importable, so those live here, below the runtime.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sonic.errors import AppCodeError, AppDefinitionError

#: Separates the app spec from its code digest in what the coordinator sends to agents.
VERSION_SEP = "@"
DEPS_DIR = "_deps"
COMPLETE = ".complete"
HASH_DIGITS = 16
#: Set by the agent (see :func:`sonic.runtime.appcode.handle_install`); its workers inherit it
#: and find code there.
APPS_DIR_ENV = "SONIC_APPS_DIR"


def split_spec(app_spec: str) -> tuple[str, str | None]:
    """``mod:app@abc`` -> (``mod:app``, ``abc``); a spec without a digest -> (spec, None)."""
    base, sep, digest = app_spec.rpartition(VERSION_SEP)
    if not sep or ":" not in base or not digest.isalnum():
        return app_spec, None
    return base, digest


def code_dir(apps_dir: Path, digest: str) -> Path:
    if not digest.isalnum() or len(digest) != HASH_DIGITS:
        raise AppCodeError(f"bad app code digest {digest!r}")
    return apps_dir / digest


def activate_code(digest: str) -> Path:
    """In a worker: make version ``digest`` of the shipped app importable and its directory
    the working directory (so relative paths behave as they did where the app was written)."""
    apps_dir = os.environ.get(APPS_DIR_ENV)
    if not apps_dir:
        raise AppDefinitionError(
            f"app code {digest} was requested but {APPS_DIR_ENV} is not set; only agents load shipped app code"
        )
    where = code_dir(Path(apps_dir), digest)
    if not (where / COMPLETE).is_file():
        raise AppDefinitionError(f"app code {digest} is not installed on this VM ({where}); run the job again to send it")
    os.chdir(where)
    for path in (where / DEPS_DIR, where):   # the app's own modules first, then its private requirements
        if path.is_dir() and str(path) not in sys.path:
            sys.path.insert(0, str(path))
    return where
