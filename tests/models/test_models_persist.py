"""Saving and loading models: round trip, manifest, version warnings, clear errors."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd
import pytest

from models import AppModel, CorruptModelError, NotFittedError
from models.persist import ModelsNotFoundError
from profiler.synthetic import CHAIN

MB = 1_000_000


def test_round_trip_and_manifest(tmp_path: Path, chain_profile: pd.DataFrame) -> None:
    model = AppModel("chain").fit(chain_profile)
    folder = model.save(tmp_path)
    assert folder == tmp_path / "models" / "chain"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["app"] == "chain" and manifest["sonic_version"] and manifest["sklearn_version"]
    assert manifest["training"]["runs"] == 15 and len(manifest["training"]["sizes"]) == 5
    assert manifest["report"] == model.report()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same versions: no warning
        loaded = AppModel.load("chain", tmp_path)
    assert loaded.predict(CHAIN, 64 * MB) == model.predict(CHAIN, 64 * MB)


def test_other_version_warns(tmp_path: Path, chain_profile: pd.DataFrame) -> None:
    folder = AppModel("chain").fit(chain_profile).save(tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["sklearn_version"] = "0.1"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.warns(UserWarning, match="scikit-learn 0.1.*refit with `sonic profile chain`"):
        AppModel.load("chain", tmp_path)


def test_missing_models_raise_not_fitted_and_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelsNotFoundError, match="sonic profile chain") as info:
        AppModel.load("chain", tmp_path)
    assert isinstance(info.value, NotFittedError) and isinstance(info.value, FileNotFoundError)


def test_corrupt_files_are_named(tmp_path: Path, chain_profile: pd.DataFrame) -> None:
    folder = AppModel("chain").fit(chain_profile).save(tmp_path)
    (folder / "model.joblib").write_bytes(b"garbage")
    with pytest.raises(CorruptModelError, match=str(folder / "model.joblib")):
        AppModel.load("chain", tmp_path)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(CorruptModelError, match="manifest"):
        AppModel.load("chain", tmp_path)
