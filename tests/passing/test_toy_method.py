"""Adding a passing method touches one module plus its registration (issue 15).

The toy method below, "scratch" (the producer's output is copied through a scratch directory
both VMs see), is defined entirely in this file: its planner cost terms, its source selection
and its fetch. Registering it with the planner's and the runtime's registries is all it takes
for the planner to cost it and for the runtime to choose it and pass data with it; no
``sonic`` module, nor the ``PassingMethod`` enum, is edited.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path

import pytest

from sonic.app import App, Context
from sonic.cluster.spec import Calibration, ClusterSpec, Prices, VMSpec
from sonic.passing import MethodId
from sonic.plan import PassingMethod
from sonic.planner.cost import CostModel
from sonic.planner.methods import PLANNER_METHODS, FetchInputs
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


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[ScratchMethod]:
    method = ScratchMethod(tmp_path / "scratch")
    PLANNER_METHODS.register(SCRATCH, method)
    RUNTIME_METHODS.register(SCRATCH, method)
    yield method
    PLANNER_METHODS.unregister(SCRATCH)
    RUNTIME_METHODS.unregister(SCRATCH)


def _noop(ctx: Context) -> None:
    del ctx


def _stage(name: str, instances: int, time_s: float, output_bytes: float) -> StagePrediction:
    return StagePrediction(name, instances, 0.0, Estimate.exact(time_s), Estimate.exact(100.0),
                           Estimate.exact(output_bytes), True)


def _model() -> tuple[CostModel, PlacementSpace, EdgeInfo]:
    cal = Calibration(vm_bandwidth_Bps=100e6, vm_latency_s=0.0, disk_write_Bps=200e6, disk_read_Bps=400e6,
                      s3_latency_s=0.01, s3_conn_Bps=50e6, s3_aggregate_Bps=80e6, invoke_overhead_s=0.0,
                      cold_start_s=1.0, object_overhead_s=0.0)
    app = App("toy")
    app.add_stage(_noop, name="p")
    app.add_stage(_noop, name="c", after="p", pattern="broadcast")
    pred = AppPrediction(app.name, 0, {"p": _stage("p", 1, 1.0, 100 * MB), "c": _stage("c", 3, 2.0, 0)})
    vms = [VMSpec(f"vm{i}", f"10.213.0.{10 + i}", 2, 8192, 0.1) for i in range(2)]
    problem = build_problem(app, pred, ClusterSpec(vms, calibration=cal))
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


def test_a_method_is_registered_once() -> None:
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
