"""Online refit: after every run, append its measurements and refit the app's models.

Fitting is a few hundred tiny least-squares problems (milliseconds to a few hundred ms), so
refitting from the whole profile every time is simpler and safer than incremental updates.
"""

from __future__ import annotations

from pathlib import Path

from models.app_model import AppModel
from profiler.record import record_run
from profiler.store import ProfileStore
from sonic.app import App
from sonic.errors import UserInputError
from sonic.metrics import RunResult


def refit(app: App, result: RunResult, root: Path | str = Path(".sonic")) -> AppModel:
    """Record ``result`` under ``root`` and refit + save the models of ``app``."""
    if result.app != app.name:
        raise UserInputError(f"run result is of app {result.app!r}, not {app.name!r}")
    store = ProfileStore(root)
    record_run(result, store)
    model = AppModel(app.name).fit(store.load(app.name))
    model.save(root)
    return model
