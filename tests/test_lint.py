"""Static checks as tests: ruff (lint rules in pyproject's [tool.ruff]) and mypy (types, in
[tool.mypy]) run on the packages, so README's test command and .ci/run enforce them.

Both are in the ``test`` extra; where one is not installed its test is skipped with the reason.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Generous for a cold mypy run on a loaded 2-core machine (about 25 s alone, 2 s warm).
TIMEOUT_S = 240


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S)


@pytest.mark.skipif(shutil.which("ruff") is None and importlib.util.find_spec("ruff") is None,
                    reason="ruff is not installed (pip install -e '.[test]')")
def test_ruff_is_clean() -> None:
    ruff = shutil.which("ruff") or ""
    proc = _run([ruff, "check", "--no-cache", "."] if ruff else [sys.executable, "-m", "ruff", "check", "."])
    assert proc.returncode == 0, "ruff found problems (fix them, or `ruff check --fix .`):\n" + proc.stdout + proc.stderr


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed (pip install -e '.[test]')")
def test_mypy_is_clean() -> None:
    proc = _run([sys.executable, "-m", "mypy"])  # files and options: [tool.mypy] in pyproject.toml
    assert proc.returncode == 0, "mypy found type errors:\n" + proc.stdout + proc.stderr
