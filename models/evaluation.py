"""Held-out accuracy: leave the larger sizes out, predict them.

The planner extrapolates: it is asked about inputs larger than any profiled. So the MAPE
we report is measured the same way. With size groups ``s_1 < ... < s_n`` (the requested
generator sizes of the profile; the app input bytes for online runs):

* training set: every group with size <= s_n / 2;
* test set: every larger group, i.e. sizes in (s_n / 2, s_n], up to 2x beyond the largest
  training size (with a doubling sweep 2,4,8,16,32 MB: train on 2-16 MB, test on 32 MB);
* the *whole* procedure (form selection by CV included) is re-run on the training set;
* ``mape``: mean over test groups of |median prediction - median measurement| / median
  measurement, medians taken over the group's runs (each run reduced to the median over
  its instances). This is the accuracy of the typical value, which is what the model
  predicts; run-to-run noise of a shared machine is not predictable and is not in it.
* ``mape_instances``: mean absolute percentage error over every held-out instance row,
  noise included, reported alongside for transparency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.base import clone

from models.metric import MetricModel, _codes, _group_medians, ape


@dataclass(frozen=True)
class HoldoutScore:
    mape: float               # NaN when there is nothing to hold out (fewer than 2 size groups)
    mape_instances: float
    train_sizes: tuple[float, ...]
    test_sizes: tuple[float, ...]


def holdout_split(sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, test) over ``sizes`` (one entry per row)."""
    sizes = np.asarray(sizes, dtype=float)
    cut = sizes.max() / 2 * (1 + 1e-9) if sizes.size else 0.0
    return sizes <= cut, sizes > cut


def holdout_score(model: MetricModel, X: np.ndarray, y: np.ndarray, groups: np.ndarray,
                  runs: np.ndarray) -> HoldoutScore:
    """Fit a clone of ``model`` on the smaller sizes and score it on the larger ones."""
    X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float)
    groups, runs = np.asarray(groups, dtype=float), np.asarray(runs)
    train, test = holdout_split(groups)
    train_sizes = tuple(float(s) for s in np.unique(groups[train]))
    test_sizes = tuple(float(s) for s in np.unique(groups[test]))
    if not train.any() or not test.any():
        return HoldoutScore(math.nan, math.nan, train_sizes, test_sizes)
    fitted = clone(model).fit(X[train], y[train], groups=groups[train], runs=runs[train])
    pred_rows = fitted.predict(X[test])
    codes = _codes(runs[test])
    _, rx, ry = _group_medians(X[test], y[test], codes)
    run_group = np.array([groups[test][codes == k][0] for k in np.unique(codes)])
    run_pred = fitted.predict(rx)
    errors = []
    for size in np.unique(run_group):
        sel = run_group == size
        errors.append(float(ape(np.median(run_pred[sel]), np.median(ry[sel]))))
    return HoldoutScore(float(np.mean(errors)), float(np.mean(ape(pred_rows, y[test]))),
                        train_sizes, test_sizes)
