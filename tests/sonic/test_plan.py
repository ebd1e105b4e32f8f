"""The plan JSON (sonic.plan): round trip, malformed documents, fit to app and cluster."""

from __future__ import annotations

import copy
import json

import pytest

from sonic.app import App
from sonic.errors import PlanError, UserInputError
from sonic.plan import OBJECTIVES, STRATEGIES, EdgePlan, PassingMethod, Plan, StagePlan, fixed_plan


def noop(ctx):
    pass


@pytest.fixture
def app() -> App:
    app = App("video")
    app.add_stage(noop, name="split")
    app.add_stage(noop, name="extract", after="split", pattern="scatter")
    app.add_stage(noop, name="classify", after="extract", pattern="gather")
    return app.validate()


DOC = {
    "app": "video", "input_bytes": 52428800, "objective": "latency", "strategy": "sonic",
    "stages": {
        "split": {"instances": 1, "placement": {"vm0": 1}, "memory_mb": 120.5},
        "extract": {"instances": 19, "placement": {"vm0": 8, "vm1": 11}, "memory_mb": 410.0},
        "classify": {"instances": 1, "placement": {"vm1": 1}, "memory_mb": 800.0},
    },
    "edges": [
        {"src": "split", "dst": "extract", "pattern": "scatter", "method": "direct",
         "predicted_s": {"vm": 3.1, "direct": 1.2, "remote": 2.0}},
        {"src": "extract", "dst": "classify", "pattern": "gather", "method": "vm",
         "predicted_s": {"vm": 0.5, "direct": 0.7, "remote": 1.5}},
    ],
    "predicted": {"latency_s": 9.4, "cost_usd": 0.0021},
    "notes": ["hand written"],
}


def doc(**changes) -> dict:
    d = copy.deepcopy(DOC)
    for key, value in changes.items():
        if value is ...:
            del d[key]
        else:
            d[key] = value
    return d


def plan_error(document, match: str | None = None) -> str:
    with pytest.raises(PlanError) as exc:
        Plan.from_json(document)
    message = str(exc.value)
    assert "\n" not in message
    if match:
        assert match in message, message
    return message


class TestRoundTrip:
    def test_from_json_types(self):
        plan = Plan.from_json(copy.deepcopy(DOC))
        assert plan.app == "video" and plan.input_bytes == 52428800
        assert plan.stages["extract"] == StagePlan(19, {"vm0": 8, "vm1": 11}, 410.0)
        edge = plan.edge("split", "extract")
        assert edge.method is PassingMethod.DIRECT and edge.pattern == "scatter"
        assert edge.predicted_s == {"vm": 3.1, "direct": 1.2, "remote": 2.0}
        assert plan.predicted == {"latency_s": 9.4, "cost_usd": 0.0021}
        assert plan.notes == ["hand written"]

    def test_round_trip_is_exact(self):
        assert Plan.from_json(copy.deepcopy(DOC)).to_json() == DOC

    def test_round_trip_through_text_and_file(self, tmp_path, app):
        plan = Plan.from_json(copy.deepcopy(DOC))
        text = json.dumps(plan.to_json())
        assert Plan.from_json(json.loads(text)) == plan
        path = tmp_path / "plan.json"
        path.write_text(text)
        loaded = Plan.load(path)
        assert loaded == plan
        assert loaded.check(app, ["vm0", "vm1"]) is loaded

    def test_defaults_for_optional_keys(self):
        plan = Plan.from_json({"app": "a", "stages": {"s": {"placement": {"vm0": 2, "vm1": 3}}},
                               "edges": []})
        assert (plan.objective, plan.strategy, plan.input_bytes) == ("latency", "sonic", 0)
        assert plan.stages["s"].instances == 5  # defaults to the placement total
        assert plan.predicted == {} and plan.notes == []

    def test_edge_lookup_missing(self):
        plan = Plan.from_json(copy.deepcopy(DOC))
        with pytest.raises(PlanError, match="classify -> split"):
            plan.edge("classify", "split")

    def test_fixed_plan_fits_app(self, app):
        plan = fixed_plan(app, PassingMethod.REMOTE, ["vm0", "vm1"], input_bytes=7)
        assert plan.strategy == "remote" and plan.input_bytes == 7
        assert [e.method for e in plan.edges] == [PassingMethod.REMOTE] * 2
        assert [(e.src, e.dst, e.pattern) for e in plan.edges] == [("split", "extract", "scatter"),
                                                                    ("extract", "classify", "gather")]
        assert all(s.placement == {"vm0": 1, "vm1": 1} for s in plan.stages.values())
        plan.check(app, ["vm0", "vm1"])
        assert Plan.from_json(json.loads(json.dumps(plan.to_json()))) == plan

    def test_constants(self):
        assert OBJECTIVES == ("latency", "cost", "perf-per-dollar")
        assert set(STRATEGIES) == {"sonic", "remote", "vm", "direct", "oracle"}
        assert {m.value for m in PassingMethod} == {"vm", "direct", "remote"}
        assert issubclass(PlanError, UserInputError)


class TestMalformed:
    @pytest.mark.parametrize("document", [[], "plan", 5, None])
    def test_not_an_object(self, document):
        plan_error(document, "must be a JSON object")

    @pytest.mark.parametrize("key", ["app", "stages", "edges"])
    def test_missing_key(self, key):
        assert key in plan_error(doc(**{key: ...}), "missing key")

    def test_unknown_key(self):
        message = plan_error(doc(methods={}), "unknown key(s) methods")
        assert "allowed" in message

    def test_bad_method(self):
        d = doc()
        d["edges"][0]["method"] = "ftp"
        message = plan_error(d, "'ftp'")
        assert "split -> extract" in message and "vm, direct, remote" in message

    def test_negative_instances(self):
        d = doc()
        d["stages"]["extract"]["instances"] = -1
        assert "instances" in plan_error(d, "'extract'")

    @pytest.mark.parametrize("instances", ["3", 2.5, True, None])
    def test_non_integer_instances(self, instances):
        d = doc()
        d["stages"]["extract"]["instances"] = instances
        plan_error(d, "'extract': instances")

    @pytest.mark.parametrize("placement", [{"vm0": -1}, {"vm0": "2"}, {"vm0": True}, ["vm0"]])
    def test_bad_placement(self, placement):
        d = doc()
        d["stages"]["split"]["placement"] = placement
        plan_error(d, "'split': placement")

    @pytest.mark.parametrize("memory", [-5, "lots", False])
    def test_bad_memory(self, memory):
        d = doc()
        d["stages"]["split"]["memory_mb"] = memory
        plan_error(d, "memory_mb")

    def test_bad_objective(self):
        plan_error(doc(objective="speed"), "objective 'speed'")

    def test_bad_strategy_type(self):
        plan_error(doc(strategy=3), "strategy")

    def test_stages_not_an_object(self):
        plan_error(doc(stages=["split"]), '"stages"')

    def test_stage_not_an_object(self):
        d = doc()
        d["stages"]["split"] = 3
        plan_error(d, "stage 'split'")

    def test_edges_not_a_list(self):
        plan_error(doc(edges={}), '"edges"')

    @pytest.mark.parametrize("edge", [{"src": "split", "dst": "extract"}, "split->extract", {"method": "vm"}])
    def test_edge_incomplete(self, edge):
        plan_error(doc(edges=[edge]), "edge #0")

    def test_predicted_s_not_an_object(self):
        d = doc()
        d["edges"][1]["predicted_s"] = [1, 2]
        plan_error(d, "extract -> classify: predicted_s")

    @pytest.mark.parametrize("value", [-1, "big", 1.5])
    def test_bad_input_bytes(self, value):
        plan_error(doc(input_bytes=value), "input_bytes")

    def test_predicted_not_an_object(self):
        plan_error(doc(predicted=[9.4]), "predicted")

    @pytest.mark.parametrize("value", ["fast", None])
    def test_non_numeric_predicted_s(self, value):
        d = doc()
        d["edges"][0]["predicted_s"]["vm"] = value
        plan_error(d, "predicted_s")

    @pytest.mark.parametrize("notes", [5, "one note"])
    def test_bad_notes(self, notes):
        plan_error(doc(notes=notes), "notes")

    def test_boolean_input_bytes(self):
        plan_error(doc(input_bytes=True), "input_bytes")


class TestCheck:
    def test_wrong_app(self, app):
        plan = Plan.from_json(doc(app="sort"))
        with pytest.raises(PlanError) as exc:
            plan.check(app)
        assert "'sort'" in str(exc.value) and "'video'" in str(exc.value)

    def test_stage_missing(self, app):
        d = doc()
        del d["stages"]["extract"]
        with pytest.raises(PlanError, match="no entry for stage 'extract'"):
            Plan.from_json(d).check(app)

    def test_extra_stage(self, app):
        d = doc()
        d["stages"]["bogus"] = {"instances": 1, "placement": {"vm0": 1}}
        with pytest.raises(PlanError, match="names stage 'bogus'"):
            Plan.from_json(d).check(app)

    def test_missing_edge(self, app):
        d = doc()
        d["edges"] = d["edges"][:1]
        with pytest.raises(PlanError, match="no method for edge extract -> classify"):
            Plan.from_json(d).check(app)

    def test_extra_edge(self, app):
        d = doc()
        d["edges"].append({"src": "split", "dst": "classify", "method": "remote"})
        with pytest.raises(PlanError, match="edge split -> classify, which app 'video' does not have"):
            Plan.from_json(d).check(app)

    def test_unknown_vm(self, app):
        plan = Plan.from_json(copy.deepcopy(DOC))
        with pytest.raises(PlanError) as exc:
            plan.check(app, ["vm0", "vm2"])
        message = str(exc.value)
        assert "unknown VM 'vm1'" in message and "vm0, vm2" in message

    def test_vms_not_checked_without_names(self, app):
        Plan.from_json(copy.deepcopy(DOC)).check(app)


class TestLoad:
    def test_not_json(self, tmp_path):
        path = tmp_path / "plan.json"
        path.write_text("app: video\nstages: {}\n")
        with pytest.raises(PlanError) as exc:
            Plan.load(path)
        assert "not valid JSON" in str(exc.value) and "line 1" in str(exc.value)

    def test_missing_file(self, tmp_path):
        with pytest.raises(PlanError, match="cannot read plan file"):
            Plan.load(tmp_path / "nope.json")

    def test_directory(self, tmp_path):
        with pytest.raises(PlanError, match="cannot read plan file"):
            Plan.load(tmp_path)

    def test_errors_name_the_file(self, tmp_path):
        path = tmp_path / "p.json"
        path.write_text(json.dumps(doc(edges=5)))
        with pytest.raises(PlanError, match=str(path)):
            Plan.load(path)

    def test_binary_file(self, tmp_path):
        path = tmp_path / "plan.png"
        path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
        with pytest.raises(PlanError):
            Plan.load(path)


def test_edge_plan_dataclass():
    e = EdgePlan("a", "b", "scatter", PassingMethod.VM)
    assert e.predicted_s == {}
