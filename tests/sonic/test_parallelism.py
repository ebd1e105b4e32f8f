"""Elastic parallelism in the app model: declaration, load-time validation, the Context API
and routing of the chosen counts to the producer's instances."""

from __future__ import annotations

from pathlib import Path

import pytest

from sonic.app import App, Context, Parallelism
from sonic.errors import AppDefinitionError
from sonic.routing import ObjectRef, route_instances


def noop(ctx: Context) -> None:
    pass


def elastic_app(bounds: object = (2, 64), pattern: str = "scatter") -> App:
    app = App("el")
    app.add_stage(noop, name="split")
    app.add_stage(noop, name="map", after="split", pattern=pattern, parallelism=bounds)  # type: ignore[arg-type]
    return app.validate()


def test_declared_bounds_are_kept() -> None:
    app = elastic_app((2, 64))
    assert app.elastic_stages() == {"map": Parallelism(2, 64)}
    assert elastic_app(Parallelism(1, 1)).elastic_stages() == {"map": Parallelism(1, 1)}


@pytest.mark.parametrize("bounds, message", [
    ((0, 8), "parallelism min must be an integer from 1 to 100000, got 0"),
    ((1.5, 8), "parallelism min must be an integer from 1 to 100000, got 1.5"),
    ((True, 8), "parallelism min must be an integer from 1 to 100000, got True"),
    ((1, 10**400), "parallelism max must be an integer from 1 to 100000, got 1000"),
    ((1, "8"), "parallelism max must be an integer from 1 to 100000, got '8'"),
    ((9, 8), r"parallelism min 9 is above max 8; give \(min, max\) with min <= max, e.g. \(8, 9\)"),
    ((1, 2, 3), r"parallelism must be \(min, max\) instance counts, e.g. parallelism=\(2, 64\), got \(1, 2, 3\)"),
    (8, r"parallelism must be \(min, max\) instance counts"),
])
def test_bad_bounds_are_one_clear_line(bounds: object, message: str) -> None:
    with pytest.raises(AppDefinitionError, match=message) as info:
        elastic_app(bounds)
    assert "\n" not in str(info.value) and len(str(info.value)) < 200
    assert str(info.value).startswith("stage 'map': ")


@pytest.mark.parametrize("pattern", ["one-to-one", "broadcast", "gather"])
def test_only_a_scatter_consumer_can_be_elastic(pattern: str) -> None:
    with pytest.raises(AppDefinitionError, match="only a scatter consumer can be elastic"):
        elastic_app((1, 4), pattern)
    source = App("src")
    source.add_stage(noop, name="first", parallelism=(1, 4))
    with pytest.raises(AppDefinitionError, match="stage 'first' declares parallelism but no scatter edge"):
        source.validate()


def test_context_partitions_for(tmp_path: Path) -> None:
    ctx = Context("el", "split", 0, 1, [], tmp_path, tmp_path, partitions={"map": 12})
    assert ctx.partitions_for("map") == 12
    assert ctx.partitions_for("reduce") is None  # no count chosen: the function decides


def test_routing_tells_the_producer_the_chosen_count() -> None:
    app = App("el3")
    app.add_stage(noop, name="split")
    app.add_stage(noop, name="map", after="split", pattern="scatter", parallelism=(1, 8))
    app.add_stage(noop, name="side", after="split", pattern="broadcast")
    app.add_stage(noop, name="fixed", after="map", pattern="scatter")
    app.validate()
    inputs = [ObjectRef("_input", 0, "in", 10)]
    # Only elastic scatter consumers of the stage are passed on; counts for others are ignored.
    (spec,) = route_instances(app, "split", {}, inputs, {"map": 5, "fixed": 3})
    assert dict(spec.partitions) == {"map": 5}
    (spec,) = route_instances(app, "split", {}, inputs)
    assert dict(spec.partitions) == {}
    produced = {"split": [[ObjectRef("split", 0, f"c{i}", 1) for i in range(5)]]}
    maps = route_instances(app, "map", produced, inputs, {"map": 5})
    assert len(maps) == 5 and all(dict(s.partitions) == {} for s in maps)
