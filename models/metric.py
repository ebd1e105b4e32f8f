"""One metric of one stage: pick a form by leave-larger-sizes-out CV, fit it, bound it.

Data flow (why each step):

1. Rows are stage instances. Size-only forms are fitted on *pooled points*: the rows of
   one size group whose input sizes lie within a quarter octave (about +-9%) of each
   other, over all runs, form one point; its inputs are the medians of the rows, its
   target the ``statistic`` quantile of the rows (median by default). Pooling over runs
   makes the fit robust to a disturbed run on a shared machine; the size bins keep
   instances of clearly different input (a short last chunk) apart.
   A feature form whose feature varies between runs of one size (a video's bitrate) is
   fitted on *run points* (the same, per run): that variation is what it learns from.
   Features that do not (the app input bytes) use the pooled points.
2. Selection is forward-chaining CV over size groups, sorted by size: train on the groups
   smaller than group j, predict group j. This is extrapolation to the next larger size,
   exactly what the planner asks of the model. A fold's error is the median, over the
   test group's run points, of the absolute percentage error (the median keeps one
   disturbed run from deciding); a candidate's CV error is the mean over its folds.
3. Occam: the simplest candidate within 10% (relative) + 0.5 points of the best wins, and
   a form using a declared app feature must beat the best form without one by 20% to be
   chosen at all (with many features, one would otherwise win by chance).
4. Uncertainty: ``hi = mean * hi_factor_``, with ``hi_factor_`` the ``quantile`` of the
   ratios measured/predicted over the training rows and the CV held-out rows, so the bound
   covers instance spread, run noise and extrapolation error alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_X_y

from models.forms import ConstantForm, Form, LinearForm, StepForm, default_candidates, form_label
from sonic.errors import NotFittedError
from sonic.prediction import Estimate

#: Inputs (and features) within a quarter octave of each other are pooled into one point.
BINS_PER_OCTAVE = 4


def ape(pred: np.ndarray | float, truth: np.ndarray | float) -> np.ndarray:
    """Absolute percentage errors as fractions; 0 when both are 0."""
    pred, truth = np.asarray(pred, dtype=float), np.asarray(truth, dtype=float)
    return np.abs(pred - truth) / np.maximum(np.abs(truth), 1e-12)


def log_bins(values: np.ndarray) -> np.ndarray:
    """Quarter-octave bin of each value's magnitude (zero gets a bin of its own)."""
    mag = np.abs(np.asarray(values, dtype=float))
    return np.where(mag > 0, np.rint(np.log2(np.maximum(mag, 1e-300)) * BINS_PER_OCTAVE), -1e6)


#: ``statistic`` value for "the fastest run": per run the median of the point's rows, then
#: the minimum over runs (interference only adds time; every size has the same number of
#: runs, so unlike the minimum over all rows this has no bias towards sizes with more
#: instances).
BEST_RUN = "best-run"


def pool(X: np.ndarray, y: np.ndarray, groups: np.ndarray, statistic: float | str = 0.5,
         runs: np.ndarray | None = None, *, per_run: bool = False
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pool rows into points: one per (size group, input-size bin), or per (size group,
    input-size bin, run) with ``per_run``. ``statistic``: a quantile of the point's rows or
    :data:`BEST_RUN` (which needs ``runs``).

    Returns ``(PX, Py, Pg, index)``: point inputs (medians), targets, size group of each
    point, and the point index of every input row (``np.bincount(index)`` is the number of
    rows behind each point).
    """
    codes = _codes(runs) if runs is not None else np.arange(X.shape[0])
    columns = [groups, log_bins(X[:, 0])] + ([codes] if per_run else [])
    _, index = np.unique(np.column_stack(columns), axis=0, return_inverse=True)
    index = index.reshape(-1)
    n = int(index.max()) + 1 if index.size else 0
    if n == X.shape[0]:  # one row per point: nothing to pool
        order = np.argsort(index)
        px, py = X[order], y[order]
    else:
        px = np.vstack([np.median(X[index == i], axis=0) for i in range(n)])
        py = np.array([_summarise(y[index == i], codes[index == i], statistic) for i in range(n)])
    pg = np.empty(n)
    pg[index] = groups
    return px, py, pg, index


def _summarise(values: np.ndarray, run_codes: np.ndarray, statistic: float | str) -> float:
    if statistic == BEST_RUN:
        return float(min(np.median(values[run_codes == r]) for r in np.unique(run_codes)))
    return float(np.quantile(values, float(statistic)))


def _codes(values: np.ndarray) -> np.ndarray:
    """Integer codes for arbitrary (e.g. string) labels."""
    _, codes = np.unique(np.asarray(values).astype(str), return_inverse=True)
    return codes.reshape(-1)


Points = tuple[np.ndarray, np.ndarray, np.ndarray]  # inputs, targets, size group


def varies_within_groups(values: np.ndarray, groups: np.ndarray, tolerance: float = 0.01) -> bool:
    """Whether ``values`` differ by more than ``tolerance`` (relative) inside a size group."""
    for g in np.unique(groups):
        v = values[groups == g]
        if float(np.ptp(v)) > tolerance * max(float(np.median(np.abs(v))), 1e-12):
            return True
    return False


def _below(points: Points, size: float) -> Points:
    px, py, pg = points
    keep = pg < size
    return px[keep], py[keep], pg[keep]


class MetricModel(BaseEstimator):
    """Regress one metric on input size (and features), choosing the form by CV.

    Parameters
    ----------
    candidates : forms to choose from (default: :func:`models.forms.default_candidates`).
    quantile : quantile of measured/predicted ratios used for ``Estimate.hi``.
    statistic : the target of a point: a quantile of its rows (0.5: median) or
        :data:`BEST_RUN` (the median of the fastest run; for times).
    integer : round predictions to integers >= 1 (fanout).
    tolerance : relative CV-error slack within which a simpler form is preferred.
    feature_margin : a feature form must have CV error below ``feature_margin`` x the best
        size-only error (and 0.5 points below it) to be chosen.
    feature_names : names of X's columns after the first, for labels such as ``linear+frames``.
    free_features : columns (1-based, as ``Form.feature``) whose forms compete without the
        margin: regressors known to matter in general (the app input bytes), as opposed to
        declared app features, where the margin guards against picking one by chance.
    """

    def __init__(self, candidates: Sequence[Form] | None = None, quantile: float = 0.9,
                 statistic: float | str = 0.5, integer: bool = False, tolerance: float = 0.1,
                 feature_margin: float = 0.8, feature_names: Sequence[str] = (),
                 free_features: Sequence[int] = ()) -> None:
        self.candidates = candidates
        self.quantile = quantile
        self.statistic = statistic
        self.integer = integer
        self.tolerance = tolerance
        self.feature_margin = feature_margin
        self.feature_names = feature_names
        self.free_features = free_features

    # ------------------------------------------------------------------ fit
    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None,
            runs: np.ndarray | None = None) -> MetricModel:
        """``X``: rows x (input bytes, features...); ``groups``: size group of each row
        (default: its input bytes), the unit of cross-validation; ``runs``: run id of each
        row (default: every row its own run)."""
        X, y = check_X_y(X, y, dtype=np.float64, y_numeric=True)
        if not 0.5 <= self.quantile < 1:
            raise ValueError(f"quantile must be in [0.5, 1), got {self.quantile}")
        if self.statistic != BEST_RUN and not (isinstance(self.statistic, (int, float))
                                               and 0 <= self.statistic <= 1):
            raise ValueError(f"statistic must be a quantile in [0, 1] or {BEST_RUN!r}, got {self.statistic!r}")
        groups = X[:, 0].copy() if groups is None else np.asarray(groups, dtype=np.float64)
        runs = np.arange(X.shape[0]) if runs is None else np.asarray(runs)
        if groups.shape[0] != X.shape[0] or runs.shape[0] != X.shape[0]:
            raise ValueError("groups and runs must have one entry per row of X")
        self.n_samples_ = int(X.shape[0])
        self.n_features_in_ = int(X.shape[1])
        pooled = pool(X, y, groups, self.statistic, runs)[:3]
        per_run = pool(X, y, groups, self.statistic, runs, per_run=True)[:3]
        # Columns that differ between runs of one size (a video's bitrate) need run points;
        # the others (app input bytes) are fitted on the sturdier pooled points.
        self.varying_features_ = [j for j in range(1, X.shape[1]) if varies_within_groups(X[:, j], groups)]
        pg = pooled[2]
        self.group_sizes_ = [float(g) for g in np.unique(pg)]
        self.n_groups_ = len(self.group_sizes_)

        candidates = [clone(c) for c in (self.candidates or
                                         default_candidates(X.shape[1] - 1, integer=self.integer))]
        if X.shape[1] == 1:
            candidates = [c for c in candidates if not c.uses_features]
        self.cv_errors_, held_out = self._cross_validate(candidates, pooled, per_run, X, y, groups)
        self._admit_exact_steps(candidates, pooled, per_run)
        chosen, self.estimator_ = self._select(candidates, pooled, per_run)
        if chosen.uses_features:
            _, self.size_estimator_ = self._select([c for c in candidates if not c.uses_features],
                                                   pooled, per_run)
        else:
            self.size_estimator_ = self.estimator_
        self.model_name_ = self._label(self.estimator_)
        self.uses_features_ = bool(self.estimator_.uses_features)

        pred = self._finish(self.estimator_.predict(X))
        ratios = np.concatenate([y[pred > 0] / pred[pred > 0], held_out.get(self._label(chosen), np.empty(0))])
        self.hi_factor_ = float(max(1.0, np.quantile(ratios, self.quantile))) if ratios.size else 1.0
        return self

    def _cross_validate(self, candidates: list[Form], pooled: Points, per_run: Points,
                        X: np.ndarray, y: np.ndarray, groups: np.ndarray
                        ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        sizes = np.unique(pooled[2])
        rx, ry, rg = per_run
        errors: dict[str, list[float]] = {self._label(c): [] for c in candidates}
        ratios: dict[str, list[np.ndarray]] = {self._label(c): [] for c in candidates}
        for j in range(2, sizes.size):  # at least two training sizes: one point fits anything
            test, rows = rg == sizes[j], groups == sizes[j]
            for cand in candidates:
                try:
                    fitted = self._fit_form(clone(cand), _below(pooled, sizes[j]), _below(per_run, sizes[j]))
                except ValueError:
                    continue  # too few sizes or non-positive data for this form
                fold = ape(self._finish(fitted.predict(rx[test])), ry[test])
                errors[self._label(cand)].append(float(np.median(fold)))
                pred = self._finish(fitted.predict(X[rows]))
                ok = pred > 0
                ratios[self._label(cand)].append(y[rows][ok] / pred[ok])
        cv = {k: float(np.mean(v)) for k, v in errors.items() if v}
        return cv, {k: np.concatenate(v) for k, v in ratios.items() if v}

    def _admit_exact_steps(self, candidates: list[Form], pooled: Points, per_run: Points) -> None:
        """Score 0 a step form that cross-validation could not score but that reproduces every
        pooled point exactly.

        A count that leaves its floor only at the largest sizes gives the step form no
        training fold with growth (it needs one to pin its piece size), so it gets no CV
        score and a constant wins, predicting the floor for ever: forkjoin profiled at 0.5,
        1, 2 and 4 MB (fanouts 1, 1, 2, 4) was held out at 4 MB with a MAPE of 75%. On all
        the data the step is pinned (``StepForm``: the piece size is bounded by every point),
        and a count model that is exact on every size is the one to extrapolate with."""
        for cand in candidates:
            label = self._label(cand)
            if not isinstance(cand, StepForm) or label in self.cv_errors_:
                continue
            try:
                fitted = self._fit_form(clone(cand), pooled, per_run)
            except ValueError:
                continue  # the count never leaves its floor: a constant is the model
            if np.array_equal(np.rint(self._finish(fitted.predict(pooled[0]))), np.rint(pooled[1])):
                self.cv_errors_[label] = 0.0

    def _select(self, candidates: list[Form], pooled: Points, per_run: Points) -> tuple[Form, Form]:
        """The chosen candidate and its fit on all the data."""
        for form in self._ranked(candidates):
            try:
                return form, self._fit_form(clone(form), pooled, per_run)
            except ValueError:
                continue  # e.g. the fallback line on inputs too close together: try the next
        form = ConstantForm()  # fits any non-empty data
        return form, self._fit_form(form, pooled, per_run)

    def _ranked(self, candidates: list[Form]) -> list[Form]:
        """Candidates to try, best first."""
        scored = [c for c in candidates if self._label(c) in self.cv_errors_]
        if not scored:
            # Too few sizes to cross-validate: a line through the sizes if they differ enough.
            return [LinearForm()] if self.n_groups_ >= 2 else []
        free = [c for c in scored if getattr(c, "feature", None) in (None, *self.free_features)]
        best_plain = min((self.cv_errors_[self._label(c)] for c in free), default=math.inf)
        eligible = free + [c for c in scored if c not in free
                           and self.cv_errors_[self._label(c)] < self.feature_margin * best_plain - 0.005]
        eligible.sort(key=candidates.index)  # keep the order of complexity for Occam
        best = min(self.cv_errors_[self._label(c)] for c in eligible)
        limit = best * (1 + self.tolerance) + 0.005
        # Occam: the first (simplest) candidate within the limit, then the rest by error.
        first = next(c for c in eligible if self.cv_errors_[self._label(c)] <= limit)
        rest = sorted((c for c in eligible if c is not first), key=lambda c: self.cv_errors_[self._label(c)])
        return [first, *rest]

    def _label(self, form: Form) -> str:
        return form_label(form, self.feature_names)

    def _fit_form(self, form: Form, pooled: Points, per_run: Points) -> Form:
        px, py, _ = per_run if self.needs_runs(form) else pooled
        return form.fit_checked(px, py)

    def needs_runs(self, form: Form) -> bool:
        """Whether ``form`` learns from differences between runs of one size."""
        return getattr(form, "feature", None) in getattr(self, "varying_features_", ())

    # ------------------------------------------------------------------ predict
    def _check_fitted(self) -> None:
        if not hasattr(self, "estimator_"):
            raise NotFittedError("MetricModel is not fitted; call fit(X, y) first")

    def _finish(self, pred: np.ndarray) -> np.ndarray:
        if self.integer:
            return np.maximum(np.rint(pred), 1.0)
        return np.maximum(pred, 0.0)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predict rows of X; without all feature columns the best size-only form is used."""
        self._check_fitted()
        X = np.asarray(X, dtype=np.float64)
        X = X.reshape(-1, 1) if X.ndim == 1 else X
        column = getattr(self.estimator_, "feature", None)
        covered = X.shape[1] >= self.n_features_in_ or (column is not None and X.shape[1] > column)
        use = self.estimator_ if covered else self.size_estimator_
        return self._finish(use.predict(X))

    def predict_estimate(self, x: float, features: Sequence[float] | None = None) -> Estimate:
        """Mean and upper bound for one input (the planner's hot path: no numpy)."""
        self._check_fitted()
        # A form reads only its own column: features given up to it are enough.
        column = getattr(self.estimator_, "feature", None)
        if self.uses_features_ and features is not None and column is not None and len(features) >= column:
            mean = self.estimator_.predict_one(x, features)
        else:
            mean = self.size_estimator_.predict_one(x, ())
        if self.integer:
            mean = float(max(round(mean), 1))
            return Estimate(mean, float(max(mean, math.ceil(mean * self.hi_factor_))))
        mean = max(mean, 0.0)
        return Estimate(mean, mean * self.hi_factor_)
