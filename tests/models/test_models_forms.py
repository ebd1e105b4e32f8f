"""Candidate forms recover the functions they are meant for; sklearn conventions hold."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.base import clone

from models.forms import (
    ConstantForm,
    IsotonicForm,
    LinearForm,
    PowerLawForm,
    QuadraticForm,
    StepForm,
    default_candidates,
    form_label,
)
from sonic.errors import NotFittedError

X = np.array([[1e6], [2e6], [4e6], [8e6], [16e6]])


@pytest.mark.parametrize("form, fn", [
    (ConstantForm(), lambda x: 130.0),
    (LinearForm(), lambda x: 80.0 + 3e-6 * x),
    (PowerLawForm(), lambda x: 2e-4 * x ** 0.8),
    (QuadraticForm(), lambda x: 1.0 + 1e-7 * x + 1e-14 * x * x),
    (StepForm(), lambda x: max(2.0, math.ceil(x / 4e6))),
])
def test_form_recovers_its_function_and_extrapolates(form, fn) -> None:
    y = np.array([fn(float(x)) for x in X[:, 0]])
    fitted = form.fit(X, y)
    for x in (16e6, 32e6):
        assert fitted.predict(np.array([[x]]))[0] == pytest.approx(fn(x), rel=1e-6)
        assert fitted.predict_one(x) == pytest.approx(fn(x), rel=1e-6)


def test_isotonic_is_monotone_and_flat_beyond_the_data() -> None:
    y = np.array([1.0, 3.0, 2.0, 5.0, 6.0])
    iso = IsotonicForm().fit(X, y)
    pred = iso.predict(X)
    assert np.all(np.diff(pred) >= 0) and pred[1] == pred[2] == 2.5
    assert iso.predict_one(1e9) == 6.0 and iso.predict_one(1.0) == 1.0


def test_feature_form_uses_its_column() -> None:
    Xf = np.column_stack([X[:, 0], [1, 3, 2, 4, 1]])
    y = 0.5 + 1e-7 * Xf[:, 0] + 2.0 * Xf[:, 1]
    lin = LinearForm(feature=1).fit(Xf, y)
    assert lin.predict_one(32e6, (5.0,)) == pytest.approx(0.5 + 3.2 + 10.0)
    assert form_label(lin, ["complexity"]) == "linear+complexity"
    assert lin.uses_features and not LinearForm().uses_features


def test_unfitted_form_raises_not_fitted() -> None:
    with pytest.raises(NotFittedError, match="fit"):
        LinearForm().predict(X)


def test_forms_follow_sklearn_conventions() -> None:
    form = LinearForm(feature=2)
    assert form.get_params() == {"feature": 2}
    assert clone(form).feature == 2 and not hasattr(clone(form), "coef_")
    with pytest.raises(ValueError):
        LinearForm().fit(np.array([[1.0], [np.nan]]), np.array([1.0, 2.0]))  # validated at fit


def test_slopes_need_spread_inputs() -> None:
    close = np.array([[4.00e6], [4.01e6], [4.02e6]])
    with pytest.raises(ValueError, match="spanning"):
        LinearForm().fit(close, np.array([1.0, 5.0, 2.0]))
    assert ConstantForm().fit(close, np.array([1.0, 5.0, 2.0])).predict_one(1.0) == 2.0


def test_default_candidates_add_one_pair_per_feature() -> None:
    names = [form_label(f, ["a", "b"]) for f in default_candidates(2, integer=True)]
    assert names[:2] == ["constant", "step"]
    assert names[-4:] == ["linear+a", "power+a", "linear+b", "power+b"]


def test_linear_fits_relative_error_so_small_instances_keep_their_cost() -> None:
    """Sort's reduce as profiled (ms per instance input): a cost that bends upwards. Plain
    least squares laid its line through the largest points with a negative intercept and
    predicted 0 s at 0.8 MB per instance, where the cluster measured 4-4.5 ms."""
    sizes = np.array([0.125e6, 0.5e6, 2e6, 8e6, 32e6, 128e6])
    y = np.array([2.5, 2.8, 6.9, 24.0, 99.8, 494.0]) * 1e-3
    assert np.polyval(np.polyfit(sizes, y, 1), 0.8e6) <= 0  # the old fit's failure
    line = LinearForm().fit(sizes.reshape(-1, 1), y)
    assert line.coef_[0] > 0
    assert line.predict_one(0.8e6) == pytest.approx(4.25e-3, rel=0.3)


def test_linear_refuses_a_line_that_goes_non_positive_within_positive_data() -> None:
    Xs = np.array([[1.0246465], [5.89262492], [8.34268199], [9.41565181]])
    with pytest.raises(ValueError, match="non-positive"):
        LinearForm().fit(Xs, np.array([4.18475032, 4.85389609e-04, 1.02655641, 2.31629078e-03]))


def test_linear_refuses_a_line_that_goes_non_positive_just_below_the_data() -> None:
    """An elastic count may cut instances 4x below the profiled ones without a warning: a line
    through 1 ms at 1 MB and 5 ms at 2 MB predicts -1 ms at 0.5 MB; it is refused."""
    with pytest.raises(ValueError, match="non-positive"):
        LinearForm().fit(np.array([[1e6], [2e6]]), np.array([1e-3, 5e-3]))
