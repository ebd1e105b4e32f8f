"""Predictions compose through the DAG: bytes into a stage come from what its producers emit
in total, so an aggregation whose per-instance output shrinks as the fanout grows (the
example `starjoin` app) is predicted right at a size never profiled."""

from __future__ import annotations

from pathlib import Path

import pytest

from models import AppModel
from profiler import ProfileStore, profile_app
from sonic.app import load_app
from sonic.inputs import generate_input
from sonic.reference import ReferenceExecutor


@pytest.fixture(scope="module")
def starjoin(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, AppModel, Path]:
    root = tmp_path_factory.mktemp("store")
    app = load_app("examples.starjoin:app")
    profile_app(app, [1_000_000, 2_000_000, 4_000_000, 8_000_000], 1, store=ProfileStore(root))
    return app, AppModel(app.name).fit(ProfileStore(root).load(app.name)), root


@pytest.mark.parametrize("with_features", [True, False])
def test_gather_input_of_a_shrinking_aggregate_is_predicted(starjoin, with_features: bool) -> None:  # type: ignore[no-untyped-def]
    app, model, root = starjoin
    data = generate_input(app, root / "in", 20_000_000, seed=5)
    features = app.features_of(data) if with_features else None
    predicted = model.predict(app, data.stat().st_size, features=features)
    executor = ReferenceExecutor(app)
    try:
        result = executor.run(data)
    finally:
        executor.cleanup()
    actual = {s.name: [m for m in result.instances if m.stage == s.name] for s in result.stages}
    report_in = sum(m.input_bytes for m in actual["report"])
    assert predicted.stages["report"].input_bytes == pytest.approx(report_in, rel=0.15)
    agg_out = sum(m.output_bytes for m in actual["aggregate"]) / len(actual["aggregate"])
    assert predicted.stages["aggregate"].output_bytes.mean == pytest.approx(agg_out, rel=0.15)
    # nothing here is an extrapolation far beyond the profile
    assert not [w for w in predicted.warnings if "far outside" in w]


def test_far_extrapolation_warns_with_the_profiled_range(starjoin) -> None:  # type: ignore[no-untyped-def]
    app, model, _ = starjoin
    predicted = model.predict(app, 10_000_000_000)
    assert predicted.warnings and "far outside the profiled sizes" in predicted.warnings[0]


def test_features_for_a_size_without_an_input_file(starjoin) -> None:  # type: ignore[no-untyped-def]
    app, model, root = starjoin
    data = generate_input(app, root / "in2", 12_000_000, seed=6)
    typical = model.features_for_size(data.stat().st_size)
    for name, value in typical.items():
        assert value == pytest.approx(app.features_of(data)[name], rel=0.1)
