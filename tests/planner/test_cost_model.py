"""The cost model's equations on a hand-computed example (see the docstring of sonic.planner.cost).

Two VMs (2 cores, 8 GB, $0.10/h); producer p (1 instance, 1 s, 100 MB out) broadcasts to
consumer c (3 instances, 2 s). Round calibration figures make every term checkable by hand.
"""

from __future__ import annotations

import pytest
from planner_samples import _noop, cluster, prediction_for, stage_prediction

from sonic.app import App
from sonic.cluster.spec import Calibration
from sonic.errors import PlanError
from sonic.plan import PassingMethod
from sonic.planner.cost import Assignment, CostModel, objective_value, perf_per_dollar
from sonic.planner.placement import PlacementSpace
from sonic.planner.problem import build_problem

MB = 1_000_000
CAL = Calibration(vm_bandwidth_Bps=100e6, vm_latency_s=0.0, disk_write_Bps=200e6, disk_read_Bps=400e6,
                  s3_latency_s=0.01, s3_conn_Bps=50e6, s3_aggregate_Bps=80e6, invoke_overhead_s=0.0,
                  cold_start_s=1.0, object_overhead_s=0.0)
GET, PUT = 0.0004 / 1000, 0.005 / 1000


def _model(warm: dict[str, int] | None = None, c_memory: float = 100) -> tuple[CostModel, PlacementSpace]:
    app = App("hand")
    app.add_stage(_noop, name="p")
    app.add_stage(_noop, name="c", after="p", pattern="broadcast")
    pred = prediction_for(app, 0, {"p": stage_prediction("p", 1, 1.0, 100, 100 * MB),
                                   "c": stage_prediction("c", 3, 2.0, c_memory, 0)})
    problem = build_problem(app, pred, cluster(2, cores=2, memory_mb=8192, price_per_hour=0.1, calibration=CAL),
                            warm)
    space = PlacementSpace(problem.vms)
    return CostModel(problem, space), space


def _plan(space: PlacementSpace, method: PassingMethod, c_counts: tuple[int, int]) -> Assignment:
    return Assignment({"p": space.intern((1, 0)), "c": space.intern(c_counts)}, {("p", "c"): method})


def test_direct_broadcast() -> None:
    model, space = _model()
    ev = model.evaluate(_plan(space, PassingMethod.DIRECT, (2, 1)))
    # p: app input from S3 (0.01) + write 100 MB at 200 MB/s (0.5) + 1 s compute; cold start 1 s first.
    assert ev.stage_s["p"] == pytest.approx(1.51)
    assert ev.start["p"] == pytest.approx(1.0)
    # c on vm0 (2, reading in place, sharing the disk: 2 x 100 MB / 400 MB/s) and vm1 (1, pulls
    # 100 MB through vm0's NIC at 100 MB/s): max(0.5 + 2, 0.25 + 1.0 + 2) = 3.25.
    assert ev.stage_s["c"] == pytest.approx(3.25)
    assert ev.latency_s == pytest.approx(1.0 + 1.51 + 3.25)
    # 2 VMs rented for the whole run, plus the GET of the app input.
    assert ev.cost_usd == pytest.approx(2 * 0.1 * ev.latency_s / 3600 + GET)
    assert ev.vms_used == ("vm0", "vm1") and ev.cold_vms == ("vm0", "vm1")
    assert ev.uploads == {"p": False, "c": False}


def test_remote_broadcast_uploads_once_and_downloads_what_is_not_local() -> None:
    model, space = _model()
    ev = model.evaluate(_plan(space, PassingMethod.REMOTE, (2, 1)))
    # p uploads in its slot: 0.01 + 100 MB at min(50 MB/s per connection, NIC, aggregate) = 2.01.
    assert ev.stage_s["p"] == pytest.approx(1.51 + 2.01)
    # Only vm1's consumer downloads (vm0's read the producer's copy in place): 0.01 + 2.0.
    assert ev.stage_s["c"] == pytest.approx(max(2.5, 0.25 + 2.01 + 2.0))
    assert ev.cost_usd == pytest.approx(2 * 0.1 * ev.latency_s / 3600 + PUT + GET + GET)


def test_vm_storage_runs_in_waves_on_the_producers_vm() -> None:
    model, space = _model()
    ev = model.evaluate(_plan(space, PassingMethod.VM, (3, 0)))
    # 3 consumers, 2 slots: 2 waves of (2 x 100 MB / 400 MB/s + 2 s).
    assert ev.stage_s["c"] == pytest.approx(2 * 2.5)
    assert ev.cost_usd == pytest.approx(0.1 * ev.latency_s / 3600 + GET)
    with pytest.raises(PlanError, match="not on the VM"):
        model.evaluate(_plan(space, PassingMethod.VM, (2, 1)))


def test_warm_workers_remove_the_cold_start() -> None:
    model, space = _model(warm={"vm0": 2, "vm1": 2})
    ev = model.evaluate(_plan(space, PassingMethod.DIRECT, (2, 1)))
    assert ev.start["p"] == 0.0 and ev.cold_vms == ()
    assert ev.latency_s == pytest.approx(1.51 + 3.25)
    # One warm worker on vm0 is not enough for two concurrent consumers.
    model, space = _model(warm={"vm0": 1, "vm1": 2})
    ev = model.evaluate(_plan(space, PassingMethod.DIRECT, (2, 1)))
    assert ev.cold_vms == ("vm0",) and ev.start["p"] == 0.0
    assert ev.start["c"] == pytest.approx(1.51)   # c was ready anyway: the workers start at job start


def test_memory_of_concurrent_instances_must_fit() -> None:
    model, space = _model(c_memory=5000)   # two at once need 10 GB > 8 GB
    assert not model.fits("c", space.intern((2, 1)))
    assert model.fits("c", space.intern((1, 1)))           # one at a time per VM fits
    with pytest.raises(PlanError):
        model.evaluate(_plan(space, PassingMethod.DIRECT, (2, 1)))


def test_objective_values() -> None:
    assert objective_value("latency", 2.0, 3.0) == 2.0
    assert objective_value("cost", 2.0, 3.0) == 3.0
    assert objective_value("perf-per-dollar", 2.0, 3.0) == 6.0
    assert perf_per_dollar(2.0, 3.0) == pytest.approx(1 / 6)
    with pytest.raises(PlanError):
        objective_value("speed", 1.0, 1.0)


def test_broadcast_is_fetched_once_per_consumer_vm() -> None:
    """The agent keeps one copy per VM: vm1's consumers share one pull, and its second wave
    reads the copy the first one fetched."""
    model, space = _model()
    # c on (1, 2): vm0's consumer reads in place (0.25 + 2); vm1's two pull 100 MB once through
    # vm0's NIC (1 s), not twice: 2 x 100 MB / 400 MB/s + 2 + 1.0 = 3.5.
    ev = model.evaluate(_plan(space, PassingMethod.DIRECT, (1, 2)))
    assert ev.stage_s["c"] == pytest.approx(3.5)
    # All three on vm1: two waves of 2.5 s, the 1 s pull paid in the first only.
    ev = model.evaluate(_plan(space, PassingMethod.DIRECT, (0, 3)))
    assert ev.stage_s["c"] == pytest.approx(2 * 2.5 + 1.0)
    # Remote: vm1 downloads once (0.01 + 100 MB at 50 MB/s) and pays one GET for its three.
    ev = model.evaluate(_plan(space, PassingMethod.REMOTE, (0, 3)))
    assert ev.stage_s["p"] == pytest.approx(1.51 + 2.01)
    assert ev.stage_s["c"] == pytest.approx(2 * 2.5 + 2.01)
    assert ev.cost_usd == pytest.approx(2 * 0.1 * ev.latency_s / 3600 + PUT + GET + GET)
    ev = model.evaluate(_plan(space, PassingMethod.REMOTE, (1, 2)))
    assert ev.stage_s["c"] == pytest.approx(max(2.25, 2.5 + 2.01))
    assert ev.cost_usd == pytest.approx(2 * 0.1 * ev.latency_s / 3600 + PUT + GET + GET)


def test_application_input_is_downloaded_once_per_vm() -> None:
    """Every source instance receives the whole application input: one download per VM."""
    app = App("source")
    app.add_stage(_noop, name="s")
    pred = prediction_for(app, 40 * MB, {"s": stage_prediction("s", 4, 1.0, 100, 100 * MB, input_bytes=40 * MB)})
    problem = build_problem(app, pred, cluster(2, cores=2, memory_mb=8192, price_per_hour=0.1, calibration=CAL))
    space = PlacementSpace(problem.vms)
    model = CostModel(problem, space)
    # (2, 2): one wave per VM of 2 x (40 MB / 400 + 100 MB / 200) + 1 = 2.2 s, after the VM's
    # download: 0.01 + 40 MB at min(50 per connection, 100 NIC, 80 / 2 VMs) = 1.01 s.
    ev = model.evaluate(Assignment({"s": space.intern((2, 2))}, {}))
    assert ev.stage_s["s"] == pytest.approx(2.2 + 1.01)
    assert ev.cost_usd == pytest.approx(2 * 0.1 * ev.latency_s / 3600 + 2 * GET)
    # (4, 0): two waves, one download (0.01 + 40 MB at 50 MB/s).
    ev = model.evaluate(Assignment({"s": space.intern((4, 0))}, {}))
    assert ev.stage_s["s"] == pytest.approx(2 * 2.2 + 0.81)
    assert ev.cost_usd == pytest.approx(0.1 * ev.latency_s / 3600 + GET)


def test_every_object_written_and_read_costs_the_calibrated_overhead() -> None:
    """A shuffle of M x R objects pays o_obj per object on both sides (docstring, tau_v)."""
    app = App("shuffle")
    app.add_stage(_noop, name="m", instances=4)
    app.add_stage(_noop, name="r", after="m", pattern="scatter")
    pred = prediction_for(app, 0, {"m": stage_prediction("m", 4, 0.0, 100, 0),
                                   "r": stage_prediction("r", 8, 0.0, 100, 0)})
    seconds = {}
    for overhead in (0.0, 0.01):
        cal = Calibration(vm_bandwidth_Bps=100e6, vm_latency_s=0.0, disk_write_Bps=200e6, disk_read_Bps=400e6,
                          s3_latency_s=0.01, s3_conn_Bps=50e6, s3_aggregate_Bps=80e6, invoke_overhead_s=0.0,
                          cold_start_s=0.0, object_overhead_s=overhead)
        problem = build_problem(app, pred, cluster(1, cores=4, calibration=cal), None)
        space = PlacementSpace(problem.vms)
        ev = CostModel(problem, space).evaluate(Assignment({"m": space.intern((4,)), "r": space.intern((8,))},
                                                           {("m", "r"): PassingMethod.VM}))
        seconds[overhead] = ev.stage_s
    # m: 1 wave, 8 outputs per instance; r: 2 waves of 4, 4 inputs (one per mapper) and 1 output each.
    assert seconds[0.01]["m"] - seconds[0.0]["m"] == pytest.approx(8 * 0.01)
    assert seconds[0.01]["r"] - seconds[0.0]["r"] == pytest.approx(2 * (4 + 1) * 0.01)


@pytest.mark.parametrize("packed", [True, False])
def test_remote_shuffle_requests_are_m_puts_and_m_times_r_ranged_gets(packed: bool) -> None:
    """A packed shuffle (issue 12): each of the M mappers stores one object (M PUTs, one S3
    request latency in its upload), each of the R reducers makes one ranged GET per mapper
    (M x R GETs). Without packing it is M x R PUTs (and M x R request latencies per upload)."""
    m, r = 4, 8
    app = App("shuffle")
    app.add_stage(_noop, name="m", instances=m)
    app.add_stage(_noop, name="r", after="m", pattern="scatter")
    pred = prediction_for(app, 0, {"m": stage_prediction("m", m, 0.0, 100, 8 * MB),
                                   "r": stage_prediction("r", r, 0.0, 100, 0)})
    problem = build_problem(app, pred, cluster(2, cores=8, price_per_hour=0.0, calibration=CAL), None,
                            pack_outputs=packed)
    assert problem.stages["m"].packed is packed and problem.stages["m"].objects_stored == (1 if packed else r)
    space = PlacementSpace(problem.vms)
    model = CostModel(problem, space)
    # Mappers on vm0, reducers on vm1: every reducer input crosses S3.
    plan = Assignment({"m": space.intern((m, 0)), "r": space.intern((0, r))}, {("m", "r"): PassingMethod.REMOTE})
    ev = model.evaluate(plan)
    puts = m if packed else m * r
    gets = m * r
    assert model.upload_dollars("m") == pytest.approx(puts * PUT)
    assert model.download_dollars(problem.edges[0], PassingMethod.REMOTE, space.intern((m, 0)),
                                  space.intern((0, r))) == pytest.approx(gets * GET)
    # Whole run: the PUTs, the ranged GETs and the one GET of the application input.
    assert ev.cost_usd == pytest.approx(puts * PUT + (gets + 1) * GET)
    # The mapper's upload pays one request latency per object it stores: 1 packed, else r.
    up = model.stage_terms("m", space.intern((m, 0)))[2][0]
    assert up == pytest.approx(CAL.s3_latency_s * (1 if packed else r) + 8 * MB / min(50e6, 100e6 / m, 80e6 / m))
