"""One exception tree: every exception class of the packages is defined in sonic/errors.py
(sonic/runtime joins after its split), derives from SonicError, and the old import paths
still name the same class."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from sonic import errors

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("sonic", "profiler", "models", "workloads")


def _exception_classes_outside_errors() -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            relative = path.relative_to(REPO).as_posix()
            if relative == "sonic/errors.py" or relative.startswith("sonic/runtime/"):
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef) and node.name.endswith(("Error", "Exception")):
                    found.append(f"{relative}:{node.name}")
    return found


def test_no_exception_class_outside_errors() -> None:
    assert _exception_classes_outside_errors() == []


def test_every_class_is_in_the_tree_and_documented() -> None:
    classes = [v for v in vars(errors).values()
               if isinstance(v, type) and issubclass(v, BaseException) and v.__module__ == "sonic.errors"]
    assert len(classes) >= 30
    for cls in classes:
        assert issubclass(cls, errors.SonicError), cls
        assert cls.__name__ in (errors.__doc__ or ""), f"{cls.__name__} is missing from the tree in the docstring"


@pytest.mark.parametrize("module,name", [
    ("sonic.routing", "SelectionError"), ("sonic.planner.bruteforce", "TooManyPlans"),
    ("sonic.forking", "ChildVanished"), ("sonic.cluster.s3auth", "AuthError"),
    ("sonic.cluster.bootstrap", "HostKeyError"), ("sonic.cluster.bootstrap", "BootstrapError"),
    ("sonic.appversion", "AppCodeError"), ("sonic.emulation.s3store", "S3Error"),
    ("sonic.emulation.netns", "NetnsError"), ("sonic.emulation.netns", "RouteCheckError"),
    ("sonic.emulation.sshd", "SSHDError"), ("profiler.isolation", "ChildFailure"),
    ("profiler.sweep", "ProfilingError"), ("profiler.store", "CorruptProfileError"),
    ("models.persist", "CorruptModelError"), ("models.persist", "ModelsNotFoundError"),
    ("models.app_model", "NotFittedError"),
])
def test_old_import_paths_still_work(module: str, name: str) -> None:
    assert getattr(importlib.import_module(module), name) is getattr(errors, name)


def test_exit_codes() -> None:
    assert errors.CorruptModelError.exit_code == 2 and errors.TooManyPlans.exit_code == 2
    assert errors.HostKeyError.exit_code == 1 and errors.ChildVanished.exit_code == 1
