"""Adding a passing method touches one module plus its registration (issue 15).

The toy method below, "scratch" (the producer's output is copied through a scratch directory
both VMs see), is defined entirely in this file: its planner cost terms, its source selection
and its fetch. Registering it with the planner's and the runtime's registries is all it takes
for the planner to cost it, for the optimiser to choose it and write it into a plan (and a
plan file to name it), and for the runtime to choose it and pass data with it; no ``sonic``
module, nor the ``PassingMethod`` enum, is edited.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from sonic.app import App, Context
from sonic.cluster.spec import Calibration, ClusterSpec, Prices, VMSpec
from sonic.errors import PlanError, UserInputError
from sonic.passing import MethodId
from sonic.plan import PassingMethod, Plan
from sonic.planner import make_plan, render_table
from sonic.planner.bruteforce import best_of, score_all
from sonic.planner.cost import CostModel
from sonic.planner.methods import PLANNER_METHODS, FetchInputs, planner_methods
from sonic.planner.placement import PlacementSpace
from sonic.planner.problem import EdgeInfo, build_problem
from sonic.prediction import AppPrediction, Estimate, StagePrediction
from sonic.runtime.agent.fetch import Fetcher
from sonic.runtime.client import Timeouts
from sonic.runtime.methods import RUNTIME_METHODS, FetchContext, FetchRequest, Held
from sonic.runtime.objects import Checksums, ObjectStore

MB = 1_000_000
SCRATCH = MethodId("scratch", "scratch")


@dataclass(frozen=True)
class ScratchMethod:
    """The whole toy method: cost terms, source selection and fetch."""

    scratch_dir: Path
    bytes_per_s: float = 50e6

    # planner side: copying through the scratch dir is free, at a fixed rate per VM
    needs_upload: bool = False
    in_place: bool = False            # (both sides) inputs are copied here, not read where written
    # runtime side: the agent checks the copied file against its checksum; no S3 needed
    verifies_in_transit: bool = False
    needs_remote: bool = False

    def vm_seconds(self, f: FetchInputs, streams: int, remote_fraction: float) -> float:
        return f.bytes_per_consumer * remote_fraction / self.bytes_per_s

    def download_prices(self, prices: Prices) -> tuple[float, float] | None:
        return None

    # runtime side
    def choose_source(self, held: Held, consumer_vm: str, alive: AbstractSet[str]) -> tuple[str, str | None] | None:
        return (SCRATCH.wire, held.vm) if held.vm in alive else None

    def fetch(self, ctx: FetchContext, req: FetchRequest) -> None:
        req.path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.scratch_dir / req.job / req.key, req.path)


@contextmanager
def _registered(method: ScratchMethod) -> Iterator[ScratchMethod]:
    """The toy method registered with both registries for the block."""
    PLANNER_METHODS.register(SCRATCH, method)
    RUNTIME_METHODS.register(SCRATCH, method)
    try:
        yield method
    finally:
        PLANNER_METHODS.unregister(SCRATCH)
        RUNTIME_METHODS.unregister(SCRATCH)


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[ScratchMethod]:
    """The toy method at 50 MB/s: slower than Direct-Passing's 100 MB/s, never chosen."""
    with _registered(ScratchMethod(tmp_path / "scratch")) as method:
        yield method


@pytest.fixture
def fast_scratch(tmp_path: Path) -> Iterator[ScratchMethod]:
    """The toy method at 1 TB/s: the cheapest way to move the toy app's 100 MB."""
    with _registered(ScratchMethod(tmp_path / "scratch", bytes_per_s=1e12)) as method:
        yield method


def _noop(ctx: Context) -> None:
    del ctx


def _stage(name: str, instances: int, time_s: float, output_bytes: float) -> StagePrediction:
    return StagePrediction(name, instances, 0.0, Estimate.exact(time_s), Estimate.exact(100.0),
                           Estimate.exact(output_bytes), True)


def _toy() -> tuple[App, AppPrediction, ClusterSpec]:
    """p (one instance, 100 MB) -broadcast-> c (three instances of 2 s) on two 2-core VMs."""
    cal = Calibration(vm_bandwidth_Bps=100e6, vm_latency_s=0.0, disk_write_Bps=200e6, disk_read_Bps=400e6,
                      s3_latency_s=0.01, s3_conn_Bps=50e6, s3_aggregate_Bps=80e6, invoke_overhead_s=0.0,
                      cold_start_s=1.0, object_overhead_s=0.0)
    app = App("toy")
    app.add_stage(_noop, name="p")
    app.add_stage(_noop, name="c", after="p", pattern="broadcast")
    pred = AppPrediction(app.name, 0, {"p": _stage("p", 1, 1.0, 100 * MB), "c": _stage("c", 3, 2.0, 0)})
    vms = [VMSpec(f"vm{i}", f"10.213.0.{10 + i}", 2, 8192, 0.1) for i in range(2)]
    return app, pred, ClusterSpec(vms, calibration=cal)


def _model() -> tuple[CostModel, PlacementSpace, EdgeInfo]:
    problem = build_problem(*_toy())
    space = PlacementSpace(problem.vms)
    return CostModel(problem, space), space, problem.in_edges["c"][0]


def test_registries_hold_the_three_builtins_by_plan_name() -> None:
    assert [m.name for m in PLANNER_METHODS.methods()] == [m.value for m in PassingMethod]
    assert [m.wire for m in RUNTIME_METHODS.methods()] == ["local", "direct", "remote"]
    assert all(m.builtin is not None for m in RUNTIME_METHODS.methods())
    assert SCRATCH.builtin is None


def test_planner_costs_the_toy_method(scratch: ScratchMethod) -> None:
    model, space, edge = _model()
    pp, pc = space.intern((1, 0)), space.intern((2, 1))
    # vm0 holds the producer's 100 MB; vm1 copies it through the scratch dir at 50 MB/s.
    assert model.fetch(edge, SCRATCH, pp, pc) == pytest.approx((0.0, 2.0))
    assert model.download_dollars(edge, SCRATCH, pp, pc) == 0.0
    assert not PLANNER_METHODS.get("scratch").needs_upload
    # The built-ins' terms are unchanged: Direct-Passing pulls 100 MB at 100 MB/s into vm1.
    assert model.fetch(edge, PassingMethod.DIRECT, pp, pc) == pytest.approx((0.0, 1.0))
    assert model.download_dollars(edge, PassingMethod.REMOTE, pp, pc) > 0.0


def test_runtime_selects_and_fetches_by_the_toy_method(scratch: ScratchMethod, tmp_path: Path) -> None:
    key = "p/0/out"
    (scratch.scratch_dir / "job1" / "p" / "0").mkdir(parents=True)
    (scratch.scratch_dir / "job1" / key).write_bytes(b"payload")

    hooks = RUNTIME_METHODS.get(SCRATCH)
    assert hooks.choose_source(Held("vm0", remote=False), "vm1", {"vm0", "vm1"}) == ("scratch", "vm0")
    assert hooks.choose_source(Held("vm0", remote=False), "vm1", {"vm1"}) is None

    ident, by_wire = RUNTIME_METHODS.by_wire("scratch")
    assert ident == SCRATCH and by_wire is hooks
    dest = tmp_path / "vm1" / "job1" / key
    store = ObjectStore(tmp_path / "vm1")
    ctx = Fetcher("vm1", b"secret", store, Checksums(), None)
    item = {"stage": "p", "instance": 0, "name": "out", "size": 7, "method": "scratch"}
    by_wire.fetch(ctx, FetchRequest("job1", key, dest, 7, None, None, item, Timeouts()))
    assert dest.read_bytes() == b"payload"


def test_builtin_source_selection_matches_the_scheduler_rules() -> None:
    alive = {"vm0", "vm1"}
    remote, direct = RUNTIME_METHODS.get(PassingMethod.REMOTE), RUNTIME_METHODS.get(PassingMethod.DIRECT)
    assert remote.choose_source(Held("vm1", remote=True), "vm1", alive) == ("local", "vm1")
    assert remote.choose_source(Held("vm0", remote=True), "vm1", alive) == ("remote", None)
    assert direct.choose_source(Held("vm0", remote=True), "vm1", alive) == ("direct", "vm0")
    assert direct.choose_source(Held("vm0", remote=True), "vm1", {"vm1"}) == ("remote", None)
    assert direct.choose_source(Held("vm0", remote=False), "vm1", {"vm1"}) is None


def test_a_method_is_registered() -> None:
    with pytest.raises(ValueError, match="already registered"):
        RUNTIME_METHODS.register(PassingMethod.VM, RUNTIME_METHODS.get(PassingMethod.VM))


def test_the_agent_fetches_by_the_toy_method(scratch: ScratchMethod, tmp_path: Path) -> None:
    """The agent's own fetch path (``Fetcher.ensure_local``) hands a registered extra method's
    input to the method's hook, then verifies and remembers it like any fetched copy."""
    from sonic.errors import AgentRequestError
    from sonic.runtime.objects import file_checksum

    source = scratch.scratch_dir / "job1" / "p" / "0" / "out"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"payload")
    fetcher = Fetcher("vm1", b"secret", ObjectStore(tmp_path / "vm1"), Checksums(), None)
    item = {"stage": "p", "instance": 0, "name": "out", "size": 7, "checksum": file_checksum(source),
            "method": "scratch", "vm": "vm0"}
    path, _ = fetcher.ensure_local("job1", item)
    assert path.read_bytes() == b"payload"
    assert fetcher.ensure_local("job1", item)[0] == path  # verified copy, not fetched again

    with pytest.raises(AgentRequestError, match="unknown passing method 'carrier-pigeon'"):
        fetcher.ensure_local("job1", {**item, "name": "other", "method": "carrier-pigeon"})


# ---------------------------------------------------------------------- chosen and planned
def test_the_optimiser_chooses_the_toy_method_when_it_is_cheapest(fast_scratch: ScratchMethod) -> None:
    """VM-Storage runs c's three instances in two waves on vm0 (4 s), Direct-Passing spreads
    them and pulls 100 MB into vm1 (2 s + 1 s); the scratch copy spreads them for free."""
    app, pred, spec = _toy()
    assert planner_methods() == (PassingMethod.VM, PassingMethod.DIRECT, PassingMethod.REMOTE, SCRATCH)
    plan = make_plan(app, pred, spec)
    edge = plan.edge("p", "c")
    assert edge.method is SCRATCH
    assert set(edge.predicted_s) == {"vm", "direct", "remote", "scratch"}
    assert edge.predicted_s["scratch"] == min(edge.predicted_s.values())
    assert edge.predicted_s["scratch"] < edge.predicted_s["direct"] < edge.predicted_s["vm"]
    assert sorted(plan.stages["c"].placement.values()) == [1, 2]      # spread over both VMs
    # The DP's choice is the optimum of the cost model over the space with the extra method.
    expected = best_of(score_all(app, pred, spec))
    assert expected is not None and expected.assignment.methods[("p", "c")] is SCRATCH
    assert plan.predicted["latency_s"] == pytest.approx(expected.latency_s, rel=1e-12)
    # The plan names the method by its plan name, in JSON and in the table.
    doc = plan.to_json()
    assert doc["edges"][0]["method"] == "scratch"
    assert "scratch s" in render_table(plan)
    # A baseline strategy still fixes a built-in on every edge.
    assert make_plan(app, pred, spec, strategy="direct").edge("p", "c").method is PassingMethod.DIRECT


def test_a_plan_naming_the_toy_method_round_trips_through_json(fast_scratch: ScratchMethod, tmp_path: Path) -> None:
    app, pred, spec = _toy()
    plan = make_plan(app, pred, spec)
    text = json.dumps(plan.to_json(), indent=2)
    again = Plan.from_json(json.loads(text))
    assert again.edge("p", "c").method == SCRATCH
    assert json.dumps(again.to_json(), indent=2) == text
    path = tmp_path / "plan.json"
    path.write_text(text)
    loaded = Plan.load(path).check(app, spec.vm_names)
    assert loaded.edge("p", "c").method == SCRATCH
    # The runtime finds the method a loaded plan names in its own registry.
    assert RUNTIME_METHODS.get(loaded.edge("p", "c").method) is fast_scratch


def test_a_plan_file_naming_an_unregistered_method_is_rejected_in_one_line(tmp_path: Path) -> None:
    app, pred, spec = _toy()
    method = ScratchMethod(tmp_path / "scratch", bytes_per_s=1e12)
    with _registered(method):
        text = json.dumps(make_plan(app, pred, spec).to_json())
    assert '"method": "scratch"' in text
    path = tmp_path / "plan.json"
    path.write_text(text)
    with pytest.raises(PlanError) as caught:
        Plan.load(path)
    message = str(caught.value)
    assert message == (f"{path}: edge p -> c: method 'scratch' is not allowed; use one of vm, direct, remote")
    assert "\n" not in message and isinstance(caught.value, UserInputError)
    # While registered, the error names it among the methods allowed.
    with _registered(method):
        doc = json.loads(text)
        doc["edges"][0]["method"] = "carrier-pigeon"
        with pytest.raises(PlanError, match="'carrier-pigeon' is not allowed; use one of vm, direct, remote, scratch$"):
            Plan.from_json(doc)


def test_an_extra_method_that_loses_changes_nothing_else_and_leaves_no_trace(tmp_path: Path) -> None:
    """With no extra method registered the plan is the built-ins' plan (the planner tests pin
    those); a registered method that is never cheapest only adds its own predicted seconds."""
    app, pred, spec = _toy()
    before = make_plan(app, pred, spec).to_json()
    assert {m for e in before["edges"] for m in e["predicted_s"]} == {"vm", "direct", "remote"}
    with _registered(ScratchMethod(tmp_path / "scratch")):        # 50 MB/s: never cheapest
        during = make_plan(app, pred, spec).to_json()
    assert during["edges"][0]["method"] == before["edges"][0]["method"] == "direct"
    assert "scratch" in during["edges"][0]["predicted_s"]
    del during["edges"][0]["predicted_s"]["scratch"]
    assert json.dumps(during) == json.dumps(before)
    after = make_plan(app, pred, spec).to_json()
    assert json.dumps(after) == json.dumps(before)
    assert planner_methods() == (PassingMethod.VM, PassingMethod.DIRECT, PassingMethod.REMOTE)


@pytest.mark.parametrize("in_place, needs_remote", [(True, False), (False, True)])
def test_the_scheduler_places_and_uploads_by_the_methods_flags(tmp_path: Path, in_place: bool,
                                                               needs_remote: bool) -> None:
    """The runtime's placement (consumers of an in-place edge run where the data is) and upload
    rules (the producer of an edge whose fetch needs remote storage uploads) read the method's
    flags, so an extra method gets them without a scheduler edit."""
    from dataclasses import replace

    from sonic.plan import fixed_plan
    from sonic.routing import ObjectRef
    from sonic.runtime.scheduler import Dispatch, InstanceFinished, JobState

    method = replace(ScratchMethod(tmp_path / "scratch"), in_place=in_place, needs_remote=needs_remote)
    app = App("toyrun")
    app.add_stage(_noop, name="p")
    app.add_stage(_noop, name="c", after="p", pattern="scatter")
    app.validate()
    plan = fixed_plan(app, PassingMethod.DIRECT, ["vm0", "vm1"])
    plan.edges = [replace(e, method=SCRATCH) for e in plan.edges]
    RUNTIME_METHODS.register(SCRATCH, method)
    try:
        state = JobState(app, plan, {"vm0": 2, "vm1": 2}, [ObjectRef("_input", 0, "in", 100, "c0")])
        (producer,) = [a for a in state.start() if isinstance(a, Dispatch)]
        assert producer.upload is needs_remote
        outs = tuple((f"part-{i}", 10, f"ck-{i}") for i in range(4))
        consumers = [a for a in state.handle(InstanceFinished("p", 0, producer.vm, outs, producer.upload))
                     if isinstance(a, Dispatch)]
        if in_place:  # all four wait for the producer VM's two slots
            assert len(consumers) == 2 and {d.vm for d in consumers} == {producer.vm}
        else:
            assert {d.vm for d in consumers} == {"vm0", "vm1"}
    finally:
        RUNTIME_METHODS.unregister(SCRATCH)


def test_a_plan_naming_a_method_the_runtime_lacks_fails_before_anything_runs(tmp_path: Path) -> None:
    from dataclasses import replace

    from sonic.errors import PlanError
    from sonic.plan import fixed_plan
    from sonic.routing import ObjectRef
    from sonic.runtime.scheduler import JobState

    app = App("toyrun2")
    app.add_stage(_noop, name="p")
    app.add_stage(_noop, name="c", after="p", pattern="scatter")
    app.validate()
    plan = fixed_plan(app, PassingMethod.DIRECT, ["vm0"])
    plan.edges = [replace(e, method=SCRATCH) for e in plan.edges]
    PLANNER_METHODS.register(SCRATCH, ScratchMethod(tmp_path / "scratch"))  # planner side only
    try:
        with pytest.raises(PlanError, match="scratch.*cannot run"):
            JobState(app, plan, {"vm0": 1}, [ObjectRef("_input", 0, "in", 100, "c0")])
    finally:
        PLANNER_METHODS.unregister(SCRATCH)
