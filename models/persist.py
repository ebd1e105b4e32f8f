"""Fitted models on disk: ``ROOT/models/APP/model.joblib`` + ``manifest.json``.

The manifest (plain JSON, readable without unpickling anything) records the library
versions, a summary of the training set and the accuracy report. Loading checks the
versions *before* unpickling and warns on a mismatch: a pickle from another scikit-learn or
sonic version may load yet predict differently. Both files are written to temporary names
and renamed, model first, so a reader never pairs a new manifest with an old model.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import warnings
from pathlib import Path
from typing import Any, Protocol, TypeVar

import joblib
import sklearn

import sonic
from sonic.errors import CorruptModelError, ModelsNotFoundError

FORMAT = 2
MODEL_FILE = "model.joblib"
MANIFEST_FILE = "manifest.json"


class SavableModel(Protocol):
    """What this module needs of a fitted model (``models.app_model.AppModel``), named here
    so that persistence sits below the model class instead of importing it back."""

    app_name: str
    training_: dict[str, Any]

    def _check_fitted(self) -> None: ...

    def report(self) -> list[dict[str, Any]]: ...


ModelT = TypeVar("ModelT", bound=SavableModel)


def model_dir(root: Path, app: str) -> Path:
    return Path(root) / "models" / app


def versions() -> dict[str, str]:
    return {"sonic_version": sonic.__version__, "sklearn_version": sklearn.__version__}


def save_model(model: SavableModel, root: Path) -> Path:
    model._check_fitted()
    folder = model_dir(root, model.app_name)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"app": model.app_name, "format": FORMAT, **versions(),
                "training": model.training_, "report": model.report()}
    # Unique temporary names: concurrent writers (serialised by the app's lock in
    # models.refit, but a plain `sonic profile` may race) never rename each other's file.
    tmp_model = _temp_path(folder, MODEL_FILE)
    try:
        joblib.dump(model, tmp_model)
        os.replace(tmp_model, folder / MODEL_FILE)
        tmp_manifest = _temp_path(folder, MANIFEST_FILE)
        tmp_manifest.write_text(json.dumps(manifest, indent=2))
        os.replace(tmp_manifest, folder / MANIFEST_FILE)
    finally:
        for leftover in folder.glob(f".*.{os.getpid()}.*.tmp"):
            leftover.unlink(missing_ok=True)
    return folder


def _temp_path(folder: Path, name: str) -> Path:
    fd, path = tempfile.mkstemp(prefix=f".{name}.{os.getpid()}.", suffix=".tmp", dir=folder)
    os.close(fd)
    return Path(path)


def read_manifest(root: Path, app: str) -> dict[str, Any]:
    path = model_dir(root, app) / MANIFEST_FILE
    if not path.exists():
        raise ModelsNotFoundError(f"no fitted models for app {app!r} under {path.parent}; "
                             f"run `sonic profile {app}` to measure it")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CorruptModelError(f"model manifest {path} is unreadable ({exc}); "
                                f"delete {path.parent} and re-run `sonic profile {app}`") from exc
    if not isinstance(manifest, dict) or manifest.get("app") != app:
        raise CorruptModelError(f"model manifest {path} does not describe app {app!r}; "
                                f"delete {path.parent} and re-run `sonic profile {app}`")
    return manifest


def load_model(app: str, root: Path, kind: type[ModelT]) -> ModelT:
    """The saved models of ``app``, checked to be a ``kind`` (the caller's model class)."""
    manifest = read_manifest(root, app)
    if manifest.get("format") != FORMAT:
        # Another layout of our own classes: unpickling could half-work. Treat as absent.
        raise ModelsNotFoundError(f"models of app {app!r} in {model_dir(root, app)} use format "
                                  f"{manifest.get('format')!r}, not {FORMAT}; refit with `sonic profile {app}`")
    saved = {k: manifest.get(k) for k in versions()}
    if saved != versions():
        warnings.warn(
            f"models of app {app!r} in {model_dir(root, app)} were saved with sonic "
            f"{saved['sonic_version']} / scikit-learn {saved['sklearn_version']}, this is sonic "
            f"{sonic.__version__} / scikit-learn {sklearn.__version__}; predictions may differ: "
            f"refit with `sonic profile {app}`",
            UserWarning, stacklevel=2,
        )
    path = model_dir(root, app) / MODEL_FILE
    try:
        model = joblib.load(path)
    except FileNotFoundError as exc:
        raise ModelsNotFoundError(f"no fitted models for app {app!r}: {path} is missing; "
                             f"run `sonic profile {app}`") from exc
    except (OSError, ValueError, EOFError, pickle.UnpicklingError, AttributeError, ImportError) as exc:
        raise CorruptModelError(f"model file {path} is unreadable ({type(exc).__name__}: {exc}); "
                                f"delete it and re-run `sonic profile {app}`") from exc
    if not isinstance(model, kind) or model.app_name != app:
        raise CorruptModelError(f"model file {path} does not hold the models of app {app!r}; "
                                f"delete it and re-run `sonic profile {app}`")
    return model
