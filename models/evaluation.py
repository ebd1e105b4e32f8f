"""Held-out accuracy: leave the larger sizes out, predict them.

The planner extrapolates: it is asked about inputs larger than any profiled. So the MAPE
we report is measured the same way. With size groups ``s_1 < ... < s_n`` (the requested
generator sizes of the profile; the app input bytes for online runs):

* training set: every group with size <= s_n / 2;
* test set: every larger group, i.e. sizes in (s_n / 2, s_n], up to 2x beyond the largest
  training size (with a doubling sweep 2,4,8,16,32 MB: train on 2-16 MB, test on 32 MB);
* the *whole* procedure (form selection by CV included) is re-run on the training set;
* ``mape``: |prediction - measurement| / measurement averaged over the held-out points,
  weighted by the number of instance rows behind each point. A point pools the rows of
  one size group with similar instance input (within a quarter octave; see
  :mod:`models.metric`) over all runs (per run if the chosen form uses a feature that
  differs between runs of one size); its measurement is the model's ``statistic``
  (median; lower quartile for time) of those rows, its prediction the model's output at
  their median input and features. So this is, per held-out instance, the error against
  the typical value of instances like it: interference from other jobs on a shared
  machine is not predictable from the input and is not in it.
* ``mape_instances``: mean absolute percentage error over every held-out instance row,
  noise included, reported alongside for transparency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.base import clone

from models.metric import MetricModel, ape, pool


@dataclass(frozen=True)
class HoldoutScore:
    mape: float               # NaN when there is nothing to hold out (a single size group)
    mape_instances: float
    train_sizes: tuple[float, ...]
    test_sizes: tuple[float, ...]


def holdout_split(sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, test) over ``sizes`` (one entry per row)."""
    sizes = np.asarray(sizes, dtype=float)
    cut = sizes.max() / 2 * (1 + 1e-9) if sizes.size else 0.0
    return sizes <= cut, sizes > cut


def holdout_score(model: MetricModel, X: np.ndarray, y: np.ndarray, groups: np.ndarray,
                  runs: np.ndarray | None = None) -> HoldoutScore:
    """Fit a clone of ``model`` on the smaller sizes and score it on the larger ones."""
    X, y, groups = np.asarray(X, dtype=float), np.asarray(y, dtype=float), np.asarray(groups, dtype=float)
    train, test = holdout_split(groups)
    train_sizes = tuple(float(s) for s in np.unique(groups[train]))
    test_sizes = tuple(float(s) for s in np.unique(groups[test]))
    if not train.any() or not test.any():
        return HoldoutScore(math.nan, math.nan, train_sizes, test_sizes)
    runs = np.arange(X.shape[0]) if runs is None else np.asarray(runs)
    fitted = clone(model).fit(X[train], y[train], groups=groups[train], runs=runs[train])
    # A feature model predicts each run from that run's features: its points are per run.
    px, py, _, index = pool(X[test], y[test], groups[test], model.statistic, runs[test],
                            per_run=fitted.needs_runs(fitted.estimator_))
    weights = np.bincount(index)
    return HoldoutScore(float(np.average(ape(fitted.predict(px), py), weights=weights)),
                        float(np.mean(ape(fitted.predict(X[test]), y[test]))), train_sizes, test_sizes)
