"""The layer contract (``.importlinter``, drawn in docs/architecture.md) holds, and would catch a
violation: ``lint-imports`` (import-linter, in the ``test`` extra) runs on the packages, so
README's test command and .ci/run enforce it. Skipped with the reason where it is not installed.
"""

from __future__ import annotations

import configparser
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONTRACT = REPO / ".importlinter"
PACKAGES = ("sonic", "profiler", "models", "workloads")
TIMEOUT_S = 120

needs_import_linter = pytest.mark.skipif(
    importlib.util.find_spec("importlinter") is None,
    reason="import-linter is not installed (pip install -e '.[test]')",
)


def _lint_imports(cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # The installed console script's code, run by this interpreter: no dependence on PATH.
    code = "from importlinter.cli import lint_imports_command; lint_imports_command()"
    return subprocess.run([sys.executable, "-c", code, "--no-cache", "--no-logo"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)


@needs_import_linter
def test_imports_follow_the_layers() -> None:
    proc = _lint_imports(REPO)
    assert proc.returncode == 0, "an import breaks the layer contract (.importlinter):\n" + proc.stdout + proc.stderr


@needs_import_linter
@pytest.mark.parametrize(("module", "imported", "expected"), [
    ("sonic/errors.py", "sonic.cli", "sonic.errors -> sonic.cli"),                # upward, out of the core
    ("sonic/runtime/remote.py", "sonic.emulation.local", "sonic.runtime.remote -> sonic.emulation.local"),
    ("models/persist.py", "models.app_model", "No cycles are allowed in models"),  # a file cycle
])
def test_a_bad_import_breaks_the_contract(tmp_path: Path, module: str, imported: str, expected: str) -> None:
    """A copy of the packages with one bad import added fails, naming that import."""
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(CONTRACT, tmp_path / CONTRACT.name)
    path = tmp_path / module
    path.write_text(path.read_text() + f"\nimport {imported}  # deliberately against the contract\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}   # the copy shadows the installed packages
    proc = _lint_imports(tmp_path, env)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert expected in proc.stdout, proc.stdout


def _layer_modules() -> set[str]:
    config = configparser.ConfigParser()
    config.read(CONTRACT)
    layers = config["importlinter:contract:layers"]["layers"]
    return {name for name in re.split(r"[\s|:]+", layers) if name}


def test_every_module_of_sonic_has_a_layer() -> None:
    """A new module directly under ``sonic/`` must be placed in a layer, or the contract would
    not look at its imports."""
    children = {f"sonic.{p.stem}" for p in (REPO / "sonic").glob("*.py") if p.name != "__init__.py"}
    children |= {f"sonic.{p.parent.name}" for p in (REPO / "sonic").glob("*/__init__.py")}
    missing = sorted(children - _layer_modules())
    assert not missing, f"add these to a layer in .importlinter (and the diagram in docs/architecture.md): {missing}"
