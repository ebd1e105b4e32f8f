"""MetricModel: CV selection among forms, robustness to noise, features, bounds."""

from __future__ import annotations

import numpy as np
import pytest

from models.evaluation import holdout_score
from models.metric import MetricModel
from sonic.errors import NotFittedError

SIZES = np.array([2e6, 4e6, 8e6, 16e6, 32e6])


def _rows(fn, runs: int = 3, noise: float = 0.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = np.repeat(SIZES, runs)
    y = np.array([fn(v) for v in x]) * (1 + rng.uniform(0, noise, x.size))
    return x.reshape(-1, 1), y


@pytest.mark.parametrize("fn, expected", [
    (lambda x: 120.0, "constant"),
    (lambda x: 0.01 + 2e-8 * x, "linear"),
    (lambda x: 3e-3 * x ** 0.6, "power"),
])
def test_selects_the_generating_form(fn, expected) -> None:
    X, y = _rows(fn)
    model = MetricModel().fit(X, y)
    assert model.model_name_ == expected
    assert model.predict(np.array([[64e6]]))[0] == pytest.approx(fn(64e6), rel=1e-6)


def test_disturbed_runs_do_not_move_a_low_quantile_fit() -> None:
    X, y = _rows(lambda x: 0.01 + 2e-8 * x, runs=4)
    y[::4] *= 3.0  # one run in four is slowed down by another job
    model = MetricModel(statistic=0.25).fit(X, y, groups=X[:, 0])
    truth = 0.01 + 2e-8 * 64e6
    assert model.predict(np.array([[64e6]]))[0] == pytest.approx(truth, rel=0.02)
    est = model.predict_estimate(64e6)
    assert est.hi > est.mean  # the slow runs widen the upper bound


def test_feature_is_used_only_when_it_helps() -> None:
    rng = np.random.default_rng(1)
    x = np.repeat(SIZES, 4)
    complexity = rng.integers(1, 5, x.size).astype(float)
    noise_feature = rng.uniform(1, 2, x.size)
    X = np.column_stack([x, complexity, noise_feature])
    runs = np.arange(x.size)
    helped = MetricModel(feature_names=["complexity", "noise"]).fit(X, 1e-8 * x * complexity, groups=x, runs=runs)
    assert helped.model_name_ in {"linear+complexity", "power+complexity"}
    assert helped.predict_estimate(64e6, (3.0, 1.5)).mean == pytest.approx(1e-8 * 64e6 * 3, rel=0.05)
    # Without the features the best size-only form answers.
    assert helped.predict_estimate(64e6).mean > 0
    plain = MetricModel(feature_names=["complexity", "noise"]).fit(X, 5e-8 * x, groups=x, runs=runs)
    assert plain.model_name_ == "linear"


def test_integer_metric_predicts_counts() -> None:
    X, y = _rows(lambda x: max(2, -(-x // 4e6)))
    model = MetricModel(integer=True).fit(X, y)
    assert model.model_name_ == "step"
    est = model.predict_estimate(128e6)
    assert est.mean == 32.0 and est.hi >= est.mean and float(est.mean).is_integer()


def test_too_few_sizes_fall_back_without_cv() -> None:
    model = MetricModel().fit(np.array([[1e6], [2e6]]), np.array([1.0, 2.0]))
    assert model.model_name_ == "linear" and not model.cv_errors_
    single = MetricModel().fit(np.array([[1e6], [1e6]]), np.array([1.0, 3.0]))
    assert single.model_name_ == "constant" and single.predict_estimate(5e6).mean == 2.0


def test_unfitted_and_invalid() -> None:
    with pytest.raises(NotFittedError):
        MetricModel().predict_estimate(1.0)
    with pytest.raises(ValueError, match="quantile"):
        MetricModel(quantile=1.5).fit(*_rows(lambda x: 1.0))
    with pytest.raises(ValueError, match="groups"):
        MetricModel().fit(*_rows(lambda x: 1.0), groups=np.ones(2))


def test_a_count_that_grows_only_at_the_largest_sizes_is_a_step_held_out_too() -> None:
    """Fanouts 1, 1, 2, 4 at 0.5, 1, 2, 4 MB (forkjoin's ~1 MB chunks): the held-out refit sees
    growth only at its largest training size, so no CV fold can score the step form; being
    exact on every size it is still chosen, and 4 MB is predicted from 0.5-2 MB exactly."""
    chunk = 999_990
    sizes = np.array([chunk // 2, chunk, 2 * chunk, 4 * chunk] * 2, dtype=float)
    fanout = np.array([1, 1, 2, 4] * 2, dtype=float)
    model = MetricModel(integer=True).fit(sizes[:, None], fanout)
    assert model.model_name_ == "step"
    assert model.predict(np.array([[8.0 * chunk], [8.0 * chunk + 41]])).tolist() == [8.0, 9.0]
    score = holdout_score(MetricModel(integer=True), sizes[:, None], fanout, sizes)
    assert score.test_sizes == (4.0 * chunk,) and score.mape == 0.0
    # A count that never leaves its floor stays a constant.
    assert MetricModel(integer=True).fit(sizes[:, None], np.ones_like(sizes)).model_name_ == "constant"
