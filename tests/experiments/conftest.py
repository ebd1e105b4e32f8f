"""The ``experiments`` fixture shared by the experiment smoke tests: the package imported
afresh from the repository, writing into a temporary directory."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def experiments(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.chdir(REPO)  # `examples.topk:app` is found relative to the working directory
    for name in [m for m in sys.modules if m == "experiments" or m.startswith("experiments.")]:
        monkeypatch.delitem(sys.modules, name)
    common = importlib.import_module("experiments.common")
    common.set_output(tmp_path / "out")
    yield importlib.import_module("experiments")
    common.set_output(common.HERE)
