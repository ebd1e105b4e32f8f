"""Generic fixtures shared by the whole test suite."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
FIXTURE_APPS_DIR = TESTS_DIR / "fixtures_apps"


@pytest.fixture
def tmp_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run the test inside a fresh temporary directory (restored afterwards)."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path


@pytest.fixture
def fixture_apps(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The directory of small app modules (``tests/fixtures_apps``), importable for this test.

    ``sys.path`` is restored afterwards (``load_app`` also prepends the working directory).
    """
    monkeypatch.syspath_prepend(str(FIXTURE_APPS_DIR))
    return FIXTURE_APPS_DIR


@pytest.fixture
def sonic_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``python -m sonic.cli ARGS`` in a subprocess; returns the CompletedProcess (text).

    ``cwd`` defaults to ``tests/fixtures_apps`` so ``module:attr`` app specs resolve.
    """

    def run(*args: str | os.PathLike[str], cwd: Path | None = None, timeout: float = 120,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        full_env = {k: v for k, v in os.environ.items() if k != "SONIC_DEBUG"}
        # The checkout under test, whatever is installed.
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR.parent), full_env.get("PYTHONPATH")]))
        full_env.update(env or {})
        return subprocess.run(
            [sys.executable, "-m", "sonic.cli", *map(str, args)],
            cwd=cwd or FIXTURE_APPS_DIR, capture_output=True, text=True, timeout=timeout, env=full_env,
        )

    return run
