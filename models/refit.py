"""Learning from runs: record a run's measurements, refit, and keep the better models.

After every run that validated, its rows are appended to the profile and a *challenger*
(the models refitted on every usable row) competes with the *champion* (the saved models):

1. **Probation, judged out of sample.** A refit that replaced the champion is on probation:
   the next run, which neither the new models nor the models before them (kept as
   ``previous.joblib``) have seen, decides. If the models with the runs the refit added
   predict it worse than the models without them (mean over stages and metrics of the median
   absolute percentage error) where they differ by more than the run's measurement noise
   (:func:`worse_beyond_noise`), the refit is reverted and those runs
   are left out of every later fit (``trial.json``). (Comparing on the newest run alone a
   model fitted without it against the champion would be a tie by construction: both saw
   exactly the same rows.)
2. **No lost trust.** The challenger replaces the champion only if no stage the champion
   trusts becomes untrusted (an untrusted stage sends its edges through Remote-Storage, so
   that would make plans worse); otherwise the champion stays and the new rows wait.

Runs whose output failed validation are never learned from. Fitting is a few hundred tiny
least-squares problems (milliseconds to a few hundred ms), so refitting from the whole profile
is simpler and safer than incremental updates.

Concurrent runs of one app are serialised by a lock file per app (``fcntl.flock``), so
every challenge sees the rows of every run before it.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import joblib
import numpy as np
import pandas as pd

from models.app_model import INSTANCE_METRICS, AppModel, with_memory
from models.persist import CorruptModelError, ModelsNotFoundError, model_dir
from profiler.record import record_run
from profiler.store import ProfileStore
from sonic.app import App
from sonic.errors import NotFittedError, UserInputError
from sonic.execution import MEASUREMENT_SEMANTICS
from sonic.metrics import RunResult


@dataclass
class LearnOutcome:
    """What learning from one run did; ``line`` is the one-line summary ``sonic run`` prints."""

    recorded: bool
    replaced: bool
    reason: str
    changes: list[str] = field(default_factory=list)
    champion_error: float | None = None
    challenger_error: float | None = None
    model: AppModel | None = None

    @property
    def line(self) -> str:
        if not self.recorded:
            return f"models: not learned from this run ({self.reason})"
        if not self.replaced:
            return f"models: kept the current models ({self.reason}); this run's measurements are stored"
        changed = "; changed: " + ", ".join(self.changes) if self.changes else "; no stage changed trust or form"
        return f"models: refitted ({self.reason}){changed}"

    def to_json(self) -> dict[str, object]:
        return {"recorded": self.recorded, "replaced": self.replaced, "reason": self.reason,
                "changes": self.changes, "champion_error": self.champion_error,
                "challenger_error": self.challenger_error}


@contextmanager
def app_lock(root: Path, app: str) -> Iterator[None]:
    """Exclusive lock of one app's models and profile (blocks until free)."""
    folder = model_dir(root, app)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def learn(app: App, result: RunResult, root: Path | str) -> LearnOutcome:
    """Record ``result`` (if it validated) and replace the models if a refit is no worse."""
    if result.app != app.name:
        raise UserInputError(f"run result is of app {result.app!r}, not {app.name!r}")
    if not result.output_ok:
        return LearnOutcome(False, False, "its output failed validation")
    root = Path(root)
    with app_lock(root, app.name):
        store = ProfileStore(root)
        record_run(result, store)
        rows = store.load(app.name)
        try:
            champion: AppModel | None = AppModel.load(app.name, root)
        except (ModelsNotFoundError, CorruptModelError):
            champion = None
        return _challenge(app, champion, rows, root)


def refit(app: App, result: RunResult, root: Path | str = Path(".sonic")) -> AppModel:
    """Record ``result`` and refit unconditionally (the profiler's path); returns the models."""
    if result.app != app.name:
        raise UserInputError(f"run result is of app {result.app!r}, not {app.name!r}")
    root = Path(root)
    with app_lock(root, app.name):
        store = ProfileStore(root)
        record_run(result, store)
        model = AppModel.for_app(app).fit(store.load(app.name))
        model.save(root)
    return model


def _challenge(app: App, champion: AppModel | None, rows: pd.DataFrame, root: Path) -> LearnOutcome:
    folder = model_dir(root, app.name)
    trial = _Trial.load(folder)
    current = rows[(rows["semantics"] == MEASUREMENT_SEMANTICS) & rows["output_ok"].astype(bool)
                   & rows["error"].isna() & ~rows["run_id"].isin(trial.excluded)]
    newest = current.sort_values("timestamp")["run_id"].iloc[-1] if not current.empty else None
    fresh = current[current["run_id"] == newest]
    # 1. The runs the last refit added are judged on this run, which neither the models with
    #    them (the champion) nor the models without them (the previous champion) have seen.
    note, champion_error, previous_error = "", None, None
    previous = trial.previous_model(folder)
    if champion is not None and previous is not None and trial.added and not fresh.empty:
        champion_error, previous_error, worse = worse_beyond_noise(champion, previous, app, fresh)
        if worse:
            trial.excluded += trial.added
            current = current[~current["run_id"].isin(trial.added)]
            champion = previous
            champion.save(root)
            note = (f"the last refit predicted this run worse ({champion_error:.1%} vs {previous_error:.1%} "
                    f"without its {len(trial.added)} new run(s); beyond noise: {', '.join(worse)}): reverted, "
                    "those runs are left out; ")
        else:
            note = (f"the last refit confirmed on this run ({champion_error:.1%} vs {previous_error:.1%} without it, "
                    "no worse beyond noise); ")
    trial.added = []
    # 2. The challenger: every usable row, this run's included.
    try:
        challenger = AppModel.for_app(app).fit(current)
    except NotFittedError as exc:
        trial.save(folder, None)
        return LearnOutcome(True, False, f"{note}no models can be fitted yet: {exc}")
    if champion is None or set(champion.stages_) != set(challenger.stages_):
        challenger.save(root)
        trial.save(folder, None)
        return LearnOutcome(True, True, note + ("first models of this app" if champion is None
                                                 else "the app's stages changed"),
                            _changes(champion, challenger), model=challenger)
    lost = [s for s, sm in champion.stages_.items() if sm.trusted and not challenger.stages_[s].trusted]
    if lost:
        trial.save(folder, None)
        why = "; ".join(f"{s}: {challenger.stages_[s].untrusted_reason}" for s in lost)
        return LearnOutcome(True, False, f"{note}a refit would no longer trust {why}", model=champion,
                            champion_error=champion_error, challenger_error=previous_error)
    # Accepted on probation: the next run decides whether the runs it adds stay.
    seen = set(champion.training_.get("run_ids", []))
    trial.added = sorted(set(current["run_id"].astype(str)) - seen) if seen else [str(newest)]
    trial.save(folder, champion)
    challenger.save(root)
    return LearnOutcome(True, True, f"{note}{challenger.training_['runs']} runs, {len(trial.added)} new, on "
                        "probation until the next run", _changes(champion, challenger),
                        champion_error, previous_error, challenger)


@dataclass
class _Trial:
    """The probation of the last refit: which runs it added (``added``), the models before it
    (``previous.joblib``) and runs left out for good because adding them made predictions of
    the next run worse (``excluded``). Kept next to the models, under the app's lock."""

    added: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)

    FILE = "trial.json"
    PREVIOUS = "previous.joblib"

    @classmethod
    def load(cls, folder: Path) -> _Trial:
        try:
            doc = json.loads((folder / cls.FILE).read_text())
            return cls([str(r) for r in doc.get("added", [])], [str(r) for r in doc.get("excluded", [])])
        except (OSError, ValueError, AttributeError):
            return cls()  # no probation (or an unreadable record: start a new one)

    def previous_model(self, folder: Path) -> AppModel | None:
        try:
            model = joblib.load(folder / self.PREVIOUS)
        except (OSError, ValueError, EOFError, pickle.UnpicklingError, AttributeError, ImportError):
            return None
        return model if isinstance(model, AppModel) else None

    def save(self, folder: Path, previous: AppModel | None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        if previous is None:
            (folder / self.PREVIOUS).unlink(missing_ok=True)
        else:
            tmp = folder / f".{self.PREVIOUS}.{os.getpid()}.tmp"
            joblib.dump(previous, tmp)
            os.replace(tmp, folder / self.PREVIOUS)
        tmp = folder / f".{self.FILE}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"added": self.added, "excluded": self.excluded}))
        os.replace(tmp, folder / self.FILE)


#: Differences of percentage errors below this (0.1 percentage point) are ties whatever the
#: held-out error: a metric predicted almost exactly (memory of a stage whose held-out instance
#: error is ~0) differs between two fits of nearly the same rows by float and KB rounding only,
#: and such a "+0.0%" once reverted a sound refit.
RESOLUTION = 1e-3


def worse_beyond_noise(model: AppModel, baseline: AppModel, app: App, rows: pd.DataFrame
                       ) -> tuple[float, float, list[str]]:
    """(error of ``model``, error of ``baseline``, the elements ``model`` predicts worse) on ``rows``.

    An error is the mean, over stages and metrics (memory, time, output bytes, fanout), of the
    median absolute percentage error on the instances in ``rows``, each instance predicted at
    its own measured input bytes as the planner would. One run can rank two predictions of an
    element (a stage's metric) only when they differ by more than the measurement's
    uncertainty, taken as the baseline's held-out instance error for that metric (instances of
    one run share its conditions, so it does not shrink with their number). Differences within
    it count as ties. ``model`` is worse when its error is larger and, over the elements that
    differ beyond their uncertainty, its errors exceed the baseline's on balance.
    (Models fitted on nearly the same rows differ a little on any new run: a strict
    comparison reverted 3-4 of 11 refits of runs that measured nothing wrong.)"""
    mine, theirs = _percentage_errors(model, app, rows), _percentage_errors(baseline, app, rows)
    keys = [k for k in mine if k in theirs]
    if not keys:
        return math.inf, math.inf, []
    beyond: dict[tuple[str, str], float] = {}
    for stage, metric in keys:
        diff = float(np.median(mine[(stage, metric)]) - np.median(theirs[(stage, metric)]))
        held_out = baseline.stages_[stage].scores[metric].mape_instances
        if abs(diff) > max(held_out if math.isfinite(held_out) else 0.0, RESOLUTION):
            beyond[(stage, metric)] = diff
    error = float(np.mean([np.median(mine[k]) for k in keys]))
    baseline_error = float(np.mean([np.median(theirs[k]) for k in keys]))
    if error <= baseline_error or sum(beyond.values()) <= 0:
        return error, baseline_error, []
    return error, baseline_error, [f"{s} {m} {d:+.1%}" for (s, m), d in beyond.items() if d > 0]


def _percentage_errors(model: AppModel, app: App, rows: pd.DataFrame) -> dict[tuple[str, str], np.ndarray]:
    """Absolute percentage errors of ``model`` on ``rows``, per (stage, metric): one per
    instance for the instance metrics, one per run for the fanout."""
    errors: dict[tuple[str, str], np.ndarray] = {}
    rows = with_memory(rows, model.worker_memory_mb_)
    for stage, group in rows.groupby("stage", sort=False):
        sm = model.stages_.get(str(stage))
        if sm is None:
            continue
        feats = [f"feat_{f}" for f in sm.features]
        if any(c not in group.columns for c in feats):
            feats = []
        for metric, column in INSTANCE_METRICS.items():
            errors[(str(stage), metric)] = _ape(sm.metrics[metric].predict(sm.design(group, metric)),
                                                group[column].to_numpy(dtype=float))
        per_run = group.drop_duplicates("run_id")
        Xf = per_run[["app_input_bytes", *feats]].to_numpy(dtype=float)
        errors[(str(stage), "fanout")] = _ape(sm.metrics["fanout"].predict(Xf), per_run["instances"].to_numpy(dtype=float))
    return errors


def _ape(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.abs(pred - truth) / np.maximum(np.abs(truth), 1e-12)


def _changes(old: AppModel | None, new: AppModel) -> list[str]:
    """Stages whose trust or chosen model form changed, in words."""
    if old is None:
        return [f"{s} {'trusted' if sm.trusted else 'untrusted'}" for s, sm in new.stages_.items()]
    before = {(r["stage"], r["metric"]): r for r in old.report()}
    out = []
    for stage, sm in new.stages_.items():
        was = old.stages_.get(stage)
        if was is not None and was.trusted != sm.trusted:
            out.append(f"{stage} now {'trusted' if sm.trusted else 'untrusted (' + sm.untrusted_reason + ')'}")
    for r in new.report():
        b = before.get((r["stage"], r["metric"]))
        if b is not None and b["model"] != r["model"]:
            out.append(f"{r['stage']} {r['metric']} form {b['model']} -> {r['model']}")
    return out
