"""Candidate regression forms for one metric, scikit-learn style.

Every form maps ``X`` (column 0: input bytes; further columns: app input features) to a
positive metric. Forms are tiny on purpose: profiles hold a handful of sizes, so anything
with more than three parameters would fit noise. Each form offers ``predict`` (vectorised,
for evaluation and plots) and ``predict_one`` (pure Python on one input, for the planner's
hot path where numpy/sklearn call overhead would dominate).

Inputs are scaled by their largest training value before fitting so ``x**2`` of a gigabyte
stays well conditioned.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_X_y

from sonic.errors import NotFittedError

#: How far below (and above) the profiled inputs predictions are made without a warning
#: (``AppModel`` warns beyond it): an elastic count may cut instances this much smaller.
EXTRAPOLATION_FACTOR = 4.0

#: Forms with a slope need inputs spanning at least this ratio: a slope fitted on inputs
#: within a few percent of each other is noise and extrapolates wildly.
MIN_SPREAD = 1.1


def _distinct(col: np.ndarray) -> int:
    return int(np.unique(col).size)


def _spread_ok(col: np.ndarray) -> bool:
    lo, hi = float(np.min(np.abs(col))), float(np.max(np.abs(col)))
    return hi >= MIN_SPREAD * lo if lo > 0 else hi > 0


class Form(RegressorMixin, BaseEstimator):
    """Base class: subclasses set ``name``, ``min_points`` and ``uses_features``."""

    name = "form"
    min_points = 1          # distinct input sizes needed to fit
    uses_features = False

    def fit(self, X: np.ndarray, y: np.ndarray) -> Form:
        X, y = check_X_y(X, y, dtype=np.float64, y_numeric=True)
        return self.fit_checked(X, y)

    def fit_checked(self, X: np.ndarray, y: np.ndarray) -> Form:
        """``fit`` for arrays already validated (2-D float X, 1-D float y): the CV loop
        fits hundreds of tiny forms, where sklearn's input checks would dominate."""
        if _distinct(X[:, 0]) < self.min_points:
            raise ValueError(f"{self.name} needs {self.min_points} distinct input sizes, got {_distinct(X[:, 0])}")
        if self.min_points > 1 and not _spread_ok(X[:, 0]):
            raise ValueError(f"{self.name} needs input sizes spanning {MIN_SPREAD}x")
        self._fit(X if self.uses_features else X[:, :1], y)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        self._check_fitted()
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X.reshape(-1, 1)
        return self._predict(X if self.uses_features else X[:, :1])

    def predict_one(self, x: float, features: Sequence[float] = ()) -> float:
        """Prediction for one input without numpy: the planner calls this per stage."""
        self._check_fitted()
        return self._predict_one(x, features)

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit(X, y) first")

    # subclasses ---------------------------------------------------------------
    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        raise NotImplementedError

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return np.array([self._predict_one(float(r[0]), tuple(float(v) for v in r[1:])) for r in X])

    def _predict_one(self, x: float, features: Sequence[float]) -> float:
        raise NotImplementedError


class ConstantForm(Form):
    """``y = c`` (the median): memory of a stage dominated by its runtime, fixed fanouts."""

    name = "constant"

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        self.coef_ = [float(np.median(y))]

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return np.full(X.shape[0], self.coef_[0])

    def _predict_one(self, x: float, features: Sequence[float]) -> float:
        return self.coef_[0]


class FeatureForm(Form):
    """A form that may use one extra column ``feature`` (1-based index into X) besides x."""

    def __init__(self, feature: int | None = None) -> None:
        self.feature = feature

    @property
    def uses_features(self) -> bool:  # type: ignore[override]
        return self.feature is not None

    def _columns(self, X: np.ndarray) -> np.ndarray:
        if self.feature is None:
            return X[:, :1]
        if X.shape[1] <= self.feature:
            raise ValueError(f"{self.name}: X has no feature column {self.feature}")
        return X[:, [0, self.feature]]

    def fit_checked(self, X: np.ndarray, y: np.ndarray) -> Form:
        # The base class passes X[:, :1] to size-only forms: give _fit both columns instead.
        cols = self._columns(X)
        if not any(_distinct(c) >= self.min_points and _spread_ok(c) for c in cols.T):
            raise ValueError(f"{self.name} needs {self.min_points} distinct inputs spanning {MIN_SPREAD}x")
        self._fit(cols, y)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        self._check_fitted()
        X = np.asarray(X, dtype=np.float64)
        return self._predict(self._columns(X.reshape(-1, 1) if X.ndim == 1 else X))

    def _extra(self, features: Sequence[float]) -> float | None:
        return None if self.feature is None else float(features[self.feature - 1])


class LinearForm(FeatureForm):
    """``y = a + b x (+ c f)``: baseline plus per-byte cost, the common case; with a feature
    ``f`` (e.g. the app input bytes for a reducer's fan-in, a video's frame count, or the
    number of outputs an instance writes).

    Fitted by least *relative* squared error (each point weighted by ``1 / y``), the error
    the forms are scored by: plain least squares is ruled by the largest points, and on a
    cost that bends upwards (a sort's n log n) it lays a line with a negative intercept
    through them, which then predicts zero for the small instances plans are made of (sort's
    map and reduce at 0.8 MB per instance were predicted to take 0 s; they take 4-7 ms). A
    line that still goes non-positive where every target is positive, within the data or down
    to ``1 / EXTRAPOLATION_FACTOR`` of its smallest inputs (where an elastic count puts
    instances without a warning), is refused, as poly2 refuses a parabola that turns down."""

    name = "linear"
    min_points = 2

    def _design(self, X: np.ndarray) -> np.ndarray:
        return np.column_stack([np.ones(X.shape[0]), X / self.scale_])

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        scale = np.abs(X).max(axis=0)
        self.scale_ = np.where(scale > 0, scale, 1.0)
        design = self._design(X)
        positive = bool((y > 0).all())
        # Zero or negative targets have no relative error: those fits stay unweighted.
        weights = 1.0 / y if positive else np.ones_like(y)
        coef, *_ = np.linalg.lstsq(design * weights[:, None], y * weights, rcond=None)
        if positive:
            low = self._design(X.min(axis=0, keepdims=True) / EXTRAPOLATION_FACTOR)
            if (design @ coef <= 0).any() or (low @ coef <= 0).any():
                raise ValueError("linear goes non-positive at or below the data; not a plausible cost line")
        self.coef_ = [float(c) for c in coef]
        self._inv = [1.0 / float(s) for s in self.scale_]

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return self._design(X) @ np.asarray(self.coef_)

    def _predict_one(self, x: float, features: Sequence[float]) -> float:
        c = self.coef_
        total = c[0] + c[1] * x * self._inv[0]
        extra = self._extra(features)
        if extra is not None:
            total += c[2] * extra * self._inv[1]
        return total


class QuadraticForm(Form):
    """``y = a + b x + c x^2``: super-linear costs (e.g. n log n sorts) over a limited range.

    A parabola that turns down before twice the largest input is refused: the metrics here
    do not shrink with the input, and such a fit would be extrapolated exactly there."""

    name = "poly2"
    min_points = 3

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        self.scale_ = float(max(np.abs(X[:, 0]).max(), 1.0))
        u = X[:, 0] / self.scale_
        coef, *_ = np.linalg.lstsq(np.column_stack([np.ones_like(u), u, u * u]), y, rcond=None)
        a, b, c = (float(v) for v in coef)
        # The slope b + 2cu is linear in u: non-negative at both ends of [min input, 2x max].
        if min(b + 2 * c * float(u.min()), b + 4 * c) < 0:
            raise ValueError("poly2 turns down within 2x the data; not a plausible cost curve")
        self.coef_ = [a, b, c]

    def _predict(self, X: np.ndarray) -> np.ndarray:
        u = X[:, 0] / self.scale_
        a, b, c = self.coef_
        return a + b * u + c * u * u

    def _predict_one(self, x: float, features: Sequence[float]) -> float:
        u = x / self.scale_
        a, b, c = self.coef_
        return a + b * u + c * u * u


class PowerLawForm(FeatureForm):
    """``y = offset + k x^b (f^c)``, fitted in log space: scale-free growth (e.g. output of
    a compressor). ``offset`` is a known floor, e.g. the resident memory every instance
    starts with: peak memory is that baseline plus a part that grows with the input, and
    only that part follows a power law. Needs positive inputs and ``y > offset``."""

    min_points = 2

    def __init__(self, feature: int | None = None, offset: float = 0.0) -> None:
        super().__init__(feature)
        self.offset = offset

    @property
    def name(self) -> str:  # type: ignore[override]
        return "power" if self.offset == 0 else "base+power"

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        if (X <= 0).any() or (y <= self.offset).any():
            raise ValueError("power law needs positive inputs and outputs above the offset")
        logs = np.log(X)
        coef, *_ = np.linalg.lstsq(np.column_stack([np.ones(X.shape[0]), logs]), np.log(y - self.offset),
                                   rcond=None)
        self.coef_ = [float(c) for c in coef]

    def _predict(self, X: np.ndarray) -> np.ndarray:
        logs = np.log(np.maximum(X, 1e-12))
        return self.offset + np.exp(np.clip(self.coef_[0] + logs @ np.asarray(self.coef_[1:]), -700, 700))

    def _predict_one(self, x: float, features: Sequence[float]) -> float:
        c = self.coef_
        total = c[0] + c[1] * math.log(max(x, 1e-12))
        extra = self._extra(features)
        if extra is not None:
            total += c[2] * math.log(max(extra, 1e-12))
        return self.offset + math.exp(min(total, 700.0))  # overflow guard for absurd extrapolations


class IsotonicForm(Form):
    """Non-decreasing piecewise-linear fit (pool adjacent violators), flat beyond the data:
    saturating metrics (memory caps)."""

    name = "isotonic"
    min_points = 2

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        # Pool-adjacent-violators on the (few) points, sorted by x; ties averaged first.
        xs, inverse = np.unique(X[:, 0], return_inverse=True)
        ys = np.bincount(inverse, weights=y) / np.bincount(inverse)
        blocks: list[list[float]] = []  # [sum of y, weight]
        for value in ys:
            blocks.append([float(value), 1.0])
            while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
                total, weight = blocks.pop()
                blocks[-1][0] += total
                blocks[-1][1] += weight
        fitted = [b[0] / b[1] for b in blocks for _ in range(int(b[1]))]
        self.coef_ = fitted
        self.knots_ = [float(v) for v in xs]

    def _predict_one(self, x: float, features: Sequence[float]) -> float:
        knots, ys = self.knots_, self.coef_
        if x <= knots[0]:
            return ys[0]
        if x >= knots[-1]:
            return ys[-1]
        i = bisect.bisect_right(knots, x)
        x0, x1, y0, y1 = knots[i - 1], knots[i], ys[i - 1], ys[i]
        return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


class StepForm(Form):
    """``y = max(lo, ceil(x / u))``: a fanout that cuts the input into pieces of ``u`` bytes
    (chunks, shards, partitions) with a minimum of ``lo`` pieces. Every point bounds the
    piece size, ``x / y <= u`` (and ``u < x / (y - 1)`` above the floor). ``u`` is the lower
    bound (exact as soon as one size is a multiple of the piece), or the middle of the
    bounds when they pin it within 1% (sizes that are not multiples of the piece)."""

    name = "step"
    min_points = 2

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        lo = float(np.min(y))
        above = y > lo
        if not above.any() or (X[:, 0] <= 0).any() or (y <= 0).any():
            raise ValueError("step needs positive sizes and a count that grows above its floor")
        # ceil(x / u) <= y at every point (floor points too: a 4 MB video of 120 frames is
        # one chunk), so u >= x / y; and u < x / (y - 1) where the count left the floor.
        low = float(np.max(X[:, 0] / np.rint(y)))
        x, n = X[above, 0], np.rint(y[above])
        high = float(np.min(np.where(n > 1, x / np.maximum(n - 1, 1), np.inf)))
        self.coef_ = [lo, (low + high) / 2 if low <= high <= 1.01 * low else low]

    def _predict_one(self, x: float, features: Sequence[float]) -> float:
        lo, unit = self.coef_
        # The tolerance keeps an exact multiple (16 MB / 4 MB) from rounding up to 5.
        return max(lo, float(math.ceil(x / unit - 1e-6)))


def default_candidates(n_features: int = 0, *, integer: bool = False, offset: float = 0.0) -> list[Form]:
    """Candidates in order of complexity; ties go to the earlier (simpler) one.

    Size-only forms first, then one linear and one power form per extra column (each
    feature on its own: with five sizes, two regressors are all the data supports).
    ``integer`` adds the step form for counts; ``offset`` is the power laws' floor.
    """
    forms: list[Form] = [ConstantForm(), *([StepForm()] if integer else []), LinearForm(),
                         PowerLawForm(offset=offset), IsotonicForm(), QuadraticForm()]
    for j in range(1, n_features + 1):
        forms += [LinearForm(feature=j), PowerLawForm(feature=j, offset=offset)]
    return forms


def form_label(form: Form, feature_names: Sequence[str] = ()) -> str:
    feature = getattr(form, "feature", None)
    if feature is None:
        return form.name
    name = feature_names[feature - 1] if feature - 1 < len(feature_names) else f"f{feature}"
    return f"{form.name}+{name}"
