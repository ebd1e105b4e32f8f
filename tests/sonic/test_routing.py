"""Pure routing (sonic.routing.route_instances): which files each consumer instance receives."""

from __future__ import annotations

import pytest

from sonic.app import APP_INPUT, App
from sonic.routing import InstanceSpec, ObjectRef, edge_bytes, route_instances


def noop(ctx):
    pass


def refs(stage: str, instance: int, *names: str, size: int = 10) -> list[ObjectRef]:
    return [ObjectRef(stage, instance, n, size) for n in names]


APP_IN = [ObjectRef(APP_INPUT, 0, "input.bin", 1000)]


def two_stage(pattern: str, *, producer_instances: int = 1, consumer_instances: int = 1) -> App:
    app = App("r")
    app.add_stage(noop, name="p", instances=producer_instances)
    app.add_stage(noop, name="c", after="p", pattern=pattern, instances=consumer_instances)
    return app.validate()


def keys(spec: InstanceSpec) -> list[str]:
    return [r.key for r in spec.inputs]


class TestRecords:
    def test_object_ref_key_and_input_bytes(self):
        a, b = ObjectRef("p", 2, "x", 5), ObjectRef("q", 0, "y", 7)
        assert a.key == "p/2/x"
        spec = InstanceSpec("c", 3, 4, "x", (a, b))
        assert spec.input_bytes == 12
        assert spec.id == "c[3]"


class TestSources:
    def test_source_gets_app_inputs(self):
        app = two_stage("scatter")
        (spec,) = route_instances(app, "p", {}, APP_IN)
        assert spec == InstanceSpec("p", 0, 1, None, tuple(APP_IN))

    def test_source_with_several_instances_each_get_all_inputs(self):
        app = two_stage("one-to-one", producer_instances=3)
        inputs = APP_IN + [ObjectRef(APP_INPUT, 0, "more.bin", 5)]
        specs = route_instances(app, "p", {}, inputs)
        assert [(s.index, s.num_instances) for s in specs] == [(0, 3), (1, 3), (2, 3)]
        assert all(s.inputs == tuple(inputs) for s in specs)


class TestScatter:
    def test_single_producer_one_consumer_per_file(self):
        app = two_stage("scatter")
        produced = {"p": [refs("p", 0, "chunk-2", "chunk-0", "chunk-1")]}
        specs = route_instances(app, "c", produced, APP_IN)
        assert [s.key for s in specs] == ["chunk-0", "chunk-1", "chunk-2"]  # sorted by name
        assert [s.index for s in specs] == [0, 1, 2]
        assert all(s.num_instances == 3 for s in specs)
        assert [keys(s) for s in specs] == [["p/0/chunk-0"], ["p/0/chunk-1"], ["p/0/chunk-2"]]
        assert edge_bytes(specs, "p") == 30

    def test_shuffle_one_consumer_per_name_one_file_per_producer(self):
        app = two_stage("scatter", producer_instances=3)
        produced = {"p": [refs("p", i, "part-0", "part-1") for i in range(3)]}
        specs = route_instances(app, "c", produced, APP_IN)
        assert [s.key for s in specs] == ["part-0", "part-1"]
        assert keys(specs[0]) == ["p/0/part-0", "p/1/part-0", "p/2/part-0"]
        assert keys(specs[1]) == ["p/0/part-1", "p/1/part-1", "p/2/part-1"]
        assert edge_bytes(specs, "p") == 60

    def test_shuffle_with_names_missing_at_some_producers(self):
        app = two_stage("scatter", producer_instances=2)
        produced = {"p": [refs("p", 0, "a", "b"), refs("p", 1, "b", "c")]}
        specs = route_instances(app, "c", produced, APP_IN)
        assert {s.key: keys(s) for s in specs} == {
            "a": ["p/0/a"], "b": ["p/0/b", "p/1/b"], "c": ["p/1/c"],
        }

    def test_zero_fanout(self):
        app = two_stage("scatter")
        assert route_instances(app, "c", {"p": [[]]}, APP_IN) == []

    def test_zero_fanout_propagates_and_gather_still_runs_once(self):
        app = App("zero")
        app.add_stage(noop, name="p")
        app.add_stage(noop, name="c", after="p", pattern="scatter")
        app.add_stage(noop, name="d", after="c", pattern="one-to-one")
        app.add_stage(noop, name="g", after="d", pattern="gather")
        assert route_instances(app, "c", {"p": [[]]}, APP_IN) == []
        assert route_instances(app, "d", {"c": []}, APP_IN) == []
        (g,) = route_instances(app, "g", {"d": []}, APP_IN)
        assert g.inputs == () and g.num_instances == 1


class TestBroadcast:
    def test_every_instance_gets_every_file(self):
        app = two_stage("broadcast", producer_instances=2, consumer_instances=4)
        produced = {"p": [refs("p", 0, "m"), refs("p", 1, "m")]}
        specs = route_instances(app, "c", produced, APP_IN)
        assert len(specs) == 4
        assert all(s.num_instances == 4 and s.key is None for s in specs)
        assert all(keys(s) == ["p/0/m", "p/1/m"] for s in specs)
        assert edge_bytes(specs, "p") == 4 * 20  # every copy counts

    def test_default_one_instance(self):
        app = two_stage("broadcast")
        specs = route_instances(app, "c", {"p": [refs("p", 0, "m")]}, APP_IN)
        assert len(specs) == 1


class TestGather:
    def test_one_instance_gets_all(self):
        app = two_stage("gather", producer_instances=3)
        produced = {"p": [refs("p", 0, "a", "b"), refs("p", 1, "y"), refs("p", 2, "z")]}
        (spec,) = route_instances(app, "c", produced, APP_IN)
        assert spec.num_instances == 1 and spec.key is None
        assert keys(spec) == ["p/0/a", "p/0/b", "p/1/y", "p/2/z"]
        assert edge_bytes([spec], "p") == 40


class TestOneToOne:
    def test_instance_i_feeds_instance_i(self):
        app = two_stage("one-to-one", producer_instances=3)
        produced = {"p": [refs("p", i, f"out{i}", "extra") for i in range(3)]}
        specs = route_instances(app, "c", produced, APP_IN)
        assert [s.index for s in specs] == [0, 1, 2]
        assert [keys(s) for s in specs] == [[f"p/{i}/extra", f"p/{i}/out{i}"] for i in range(3)]
        assert all(s.key is None and s.num_instances == 3 for s in specs)

    def test_producer_instance_without_outputs_still_gets_a_consumer(self):
        app = two_stage("one-to-one", producer_instances=2)
        specs = route_instances(app, "c", {"p": [[], refs("p", 1, "x")]}, APP_IN)
        assert [keys(s) for s in specs] == [[], ["p/1/x"]]


class TestJoins:
    def make(self) -> App:
        app = App("join")
        app.add_stage(noop, name="model")
        app.add_stage(noop, name="data")
        app.add_stage(noop, name="work", after={"data": "scatter", "model": "broadcast"})
        return app.validate()

    def test_scatter_plus_broadcast(self):
        app = self.make()
        produced = {"data": [refs("data", 0, "c1", "c0")], "model": [refs("model", 0, "weights", size=100)]}
        specs = route_instances(app, "work", produced, APP_IN)
        assert [s.key for s in specs] == ["c0", "c1"]
        # inputs ordered by producer stage (topological order: data before model), instance, name
        assert keys(specs[0]) == ["data/0/c0", "model/0/weights"]
        assert keys(specs[1]) == ["data/0/c1", "model/0/weights"]
        assert edge_bytes(specs, "data") == 20
        assert edge_bytes(specs, "model") == 200
        assert [s.input_bytes for s in specs] == [110, 110]

    def test_broadcast_plus_gather(self):
        app = App("bg")
        app.add_stage(noop, name="a")
        app.add_stage(noop, name="b", after="a", pattern="scatter")
        app.add_stage(noop, name="c", after={"a": "broadcast", "b": "gather"})
        produced = {"a": [refs("a", 0, "x", "y")], "b": [refs("b", 0, "r"), refs("b", 1, "r")]}
        (spec,) = route_instances(app, "c", produced, APP_IN)
        assert keys(spec) == ["a/0/x", "a/0/y", "b/0/r", "b/1/r"]

    def test_gather_only_join_orders_inputs_like_other_joins(self):
        app = App("order")
        app.add_stage(noop, name="zz")
        app.add_stage(noop, name="aa", after="zz", pattern="scatter")
        app.add_stage(noop, name="c", after={"zz": "broadcast", "aa": "gather"})
        app.validate()
        assert app.topological_order() == ["zz", "aa", "c"]
        produced = {"zz": [refs("zz", 0, "m")], "aa": [refs("aa", 0, "r")]}
        (spec,) = route_instances(app, "c", produced, APP_IN)
        assert keys(spec) == ["zz/0/m", "aa/0/r"]

    def test_missing_producer_output_is_a_key_error(self):
        app = self.make()
        with pytest.raises(KeyError):
            route_instances(app, "work", {"data": [refs("data", 0, "c0")]}, APP_IN)
