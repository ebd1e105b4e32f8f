"""One metric of one stage: pick a form by leave-larger-sizes-out CV, fit it, bound it.

Data flow (why each step):

1. Rows are stage instances. They are first reduced to one point per *run* (medians over
   the run's instances): instances of one run share the run's features and conditions.
2. Size-only forms are fitted on one point per *size group* (median over runs). Medians
   make the fit robust to a noisy run on a shared machine without any tuning.
   Feature forms are fitted on the run points, because the features vary between runs of
   one size (that variation is the only reason to use them).
3. Selection is forward-chaining CV over size groups, sorted by size: train on the groups
   smaller than group j, predict group j. This is extrapolation to the next larger size,
   exactly what the planner asks of the model. A group's error is the median over its runs
   of the absolute percentage error; a candidate's CV error is the mean over its folds.
4. Occam: the simplest candidate within 10% (relative) + 0.5 points of the best wins, and
   a feature form must beat the best size-only form by 20% to be chosen at all.
5. Uncertainty: ``hi = mean * hi_factor_``, with ``hi_factor_`` the ``quantile`` of the
   ratios measured/predicted over the training instances and the CV held-out runs, so the
   bound covers instance spread, run noise and extrapolation error alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_X_y

from models.forms import ConstantForm, Form, LinearForm, default_candidates, form_label
from sonic.errors import NotFittedError
from sonic.prediction import Estimate


def ape(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Absolute percentage errors as fractions; 0 when both are 0."""
    pred, truth = np.asarray(pred, dtype=float), np.asarray(truth, dtype=float)
    return np.abs(pred - truth) / np.maximum(np.abs(truth), 1e-12)


def _group_medians(X: np.ndarray, y: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median of X's columns and of y per distinct key; returns (keys, X, y) sorted by key."""
    uniq, inverse = np.unique(keys, return_inverse=True)
    if uniq.size == keys.size:  # already one row per key: nothing to reduce
        order = np.argsort(keys, kind="stable")
        return uniq, X[order], y[order]
    gx = np.vstack([np.median(X[inverse == i], axis=0) for i in range(uniq.size)])
    gy = np.array([np.median(y[inverse == i]) for i in range(uniq.size)])
    return uniq, gx, gy


class MetricModel(BaseEstimator):
    """Regress one metric on input size (and features), choosing the form by CV.

    Parameters
    ----------
    candidates : forms to choose from (default: :func:`models.forms.default_candidates`).
    quantile : quantile of measured/predicted ratios used for ``Estimate.hi``.
    integer : round predictions to integers >= 1 (fanout).
    tolerance : relative CV-error slack within which a simpler form is preferred.
    feature_margin : a feature form must have CV error below ``feature_margin`` x the best
        size-only error to be chosen.
    """

    def __init__(self, candidates: Sequence[Form] | None = None, quantile: float = 0.9,
                 integer: bool = False, tolerance: float = 0.1, feature_margin: float = 0.8) -> None:
        self.candidates = candidates
        self.quantile = quantile
        self.integer = integer
        self.tolerance = tolerance
        self.feature_margin = feature_margin

    # ------------------------------------------------------------------ fit
    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None,
            runs: np.ndarray | None = None) -> MetricModel:
        """``X``: rows x (input bytes, features...); ``groups``: size group of each row
        (default: its input bytes); ``runs``: run id of each row (default: one run per row)."""
        X, y = check_X_y(X, y, dtype=np.float64, y_numeric=True)
        if not 0.5 <= self.quantile < 1:
            raise ValueError(f"quantile must be in [0.5, 1), got {self.quantile}")
        groups = X[:, 0].copy() if groups is None else np.asarray(groups, dtype=np.float64)
        runs = np.arange(X.shape[0]) if runs is None else np.asarray(runs)
        if groups.shape[0] != X.shape[0] or runs.shape[0] != X.shape[0]:
            raise ValueError("groups and runs must have one entry per row of X")
        self.n_samples_ = int(X.shape[0])
        self.n_features_in_ = int(X.shape[1])
        # One point per run, then one per size group.
        run_keys, rx, ry = _group_medians(X, y, _codes(runs))
        rg = np.array([groups[_codes(runs) == k][0] for k in run_keys])
        self.group_sizes_ = [float(g) for g in np.unique(rg)]
        self.n_groups_ = len(self.group_sizes_)

        candidates = [clone(c) for c in (self.candidates or default_candidates())]
        if X.shape[1] == 1:
            candidates = [c for c in candidates if not c.uses_features]
        self.cv_errors_, held_out = self._cross_validate(candidates, rx, ry, rg)
        chosen = self._choose(candidates)
        self.estimator_ = self._fit_form(chosen, rx, ry, rg)
        size_only = chosen if not chosen.uses_features else self._choose(
            [c for c in candidates if not c.uses_features])
        self.size_estimator_ = self.estimator_ if size_only is chosen else self._fit_form(size_only, rx, ry, rg)
        self.model_name_ = form_label(self.estimator_)
        self.uses_features_ = bool(self.estimator_.uses_features)

        pred = self._finish(self.estimator_.predict(X))
        ratios = [y[pred > 0] / pred[pred > 0], held_out.get(form_label(chosen), np.empty(0))]
        pooled = np.concatenate(ratios)
        self.hi_factor_ = float(max(1.0, np.quantile(pooled, self.quantile))) if pooled.size else 1.0
        return self

    def _cross_validate(self, candidates: list[Form], rx: np.ndarray, ry: np.ndarray,
                        rg: np.ndarray) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        sizes = np.unique(rg)
        errors: dict[str, list[float]] = {form_label(c): [] for c in candidates}
        ratios: dict[str, list[np.ndarray]] = {form_label(c): [] for c in candidates}
        for j in range(2, sizes.size):  # at least two training sizes: one point fits anything
            train, test = rg < sizes[j], rg == sizes[j]
            for cand in candidates:
                try:
                    fitted = self._fit_form(clone(cand), rx[train], ry[train], rg[train])
                except ValueError:
                    continue  # too few sizes or non-positive data for this form
                pred = self._finish(fitted.predict(rx[test]))
                errors[form_label(cand)].append(float(np.median(ape(pred, ry[test]))))
                ok = pred > 0
                ratios[form_label(cand)].append(ry[test][ok] / pred[ok])
        cv = {k: float(np.mean(v)) for k, v in errors.items() if v}
        return cv, {k: np.concatenate(v) for k, v in ratios.items() if v}

    def _choose(self, candidates: list[Form]) -> Form:
        scored = [c for c in candidates if form_label(c) in self.cv_errors_]
        if not scored:
            # Too few sizes to cross-validate: a line through two sizes, a constant for one.
            return LinearForm() if self.n_groups_ >= 2 else ConstantForm()
        size_only = [c for c in scored if not c.uses_features]
        best_plain = min((self.cv_errors_[form_label(c)] for c in size_only), default=math.inf)
        eligible = size_only + [c for c in scored if c.uses_features
                                and self.cv_errors_[form_label(c)] < self.feature_margin * best_plain]
        best = min(self.cv_errors_[form_label(c)] for c in eligible)
        limit = best * (1 + self.tolerance) + 0.005
        return next(c for c in eligible if self.cv_errors_[form_label(c)] <= limit)

    @staticmethod
    def _fit_form(form: Form, rx: np.ndarray, ry: np.ndarray, rg: np.ndarray) -> Form:
        if form.uses_features:
            return form.fit_checked(rx, ry)
        _, gx, gy = _group_medians(rx, ry, rg)
        return form.fit_checked(gx, gy)

    # ------------------------------------------------------------------ predict
    def _check_fitted(self) -> None:
        if not hasattr(self, "estimator_"):
            raise NotFittedError("MetricModel is not fitted; call fit(X, y) first")

    def _finish(self, pred: np.ndarray) -> np.ndarray:
        if self.integer:
            return np.maximum(np.rint(pred), 1.0)
        return np.maximum(pred, 0.0)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predict rows of X; without feature columns the best size-only form is used."""
        self._check_fitted()
        X = np.asarray(X, dtype=np.float64)
        X = X.reshape(-1, 1) if X.ndim == 1 else X
        use = self.estimator_ if X.shape[1] >= self.n_features_in_ else self.size_estimator_
        return self._finish(use.predict(X))

    def predict_estimate(self, x: float, features: Sequence[float] | None = None) -> Estimate:
        """Mean and upper bound for one input (the planner's hot path: no numpy)."""
        self._check_fitted()
        if self.uses_features_ and features is not None and len(features) == self.n_features_in_ - 1:
            mean = self.estimator_.predict_one(x, features)
        else:
            mean = self.size_estimator_.predict_one(x, ())
        if self.integer:
            mean = float(max(round(mean), 1))
            return Estimate(mean, float(max(mean, math.ceil(mean * self.hi_factor_))))
        mean = max(mean, 0.0)
        return Estimate(mean, mean * self.hi_factor_)


def _codes(values: np.ndarray) -> np.ndarray:
    """Integer codes for arbitrary (e.g. string) labels."""
    _, codes = np.unique(np.asarray(values).astype(str), return_inverse=True)
    return codes
