"""Plans move with the physics: fanout, NIC bandwidth and slots decide the passing method.

Setup of the brief: the default Calibration of sonic/cluster/spec.py and a small cluster of
4 VMs with 2 cores. A broadcast edge from one producer instance (20 MB) to ``n`` consumers
(1 s of compute each): at low fanout the consumers fit the producer's VM (VM-Storage, no
transfer); then they spill over into waves and Direct-Passing spreads them, until the
producer's NIC, which pushes one copy per remote consumer, is slower than S3's aggregate
(Remote-Storage). A faster NIC moves the Direct/Remote crossover to higher fanout.
"""

from __future__ import annotations

import re

import pytest

from sonic.app import App
from sonic.cluster.spec import Calibration
from sonic.plan import PassingMethod
from sonic.planner import make_plan
from sonic.planner.cost import CostModel
from sonic.planner.placement import PlacementSpace
from sonic.planner.problem import build_problem
from sonic.planner.samples import _noop, cluster, prediction_for, stage_prediction

MB = 1_000_000
FANOUTS = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64]


def _edge_app(pattern: str, n: int, size: float, t: float = 1.0) -> tuple[App, object]:
    app = App(f"edge-{pattern}")
    app.add_stage(_noop, name="p")
    app.add_stage(_noop, name="c", after="p", pattern=pattern)
    # Broadcast: every consumer gets the whole output; scatter: it is split n ways.
    pred = prediction_for(app, 0, {"p": stage_prediction("p", 1, 0.5, 200, size),
                                   "c": stage_prediction("c", n, t, 200, MB)})
    return app, pred


def _methods(bandwidth: float | None = None, size: float = 20 * MB) -> str:
    cal = Calibration() if bandwidth is None else Calibration(vm_bandwidth_Bps=bandwidth)
    letters = ""
    for n in FANOUTS:
        app, pred = _edge_app("broadcast", n, size)
        plan = make_plan(app, pred, cluster(4, cores=2, calibration=cal))  # type: ignore[arg-type]
        letters += plan.edges[0].method.value[0]
    return letters


def test_broadcast_goes_vm_then_direct_then_remote_as_fanout_grows() -> None:
    letters = _methods()          # default calibration: 150 MB/s NICs
    assert re.fullmatch(r"v+d+r+", letters), letters


def _crossover(bandwidth: float) -> float:
    letters = _methods(bandwidth)
    assert re.fullmatch(r"v+d+r*", letters), letters
    return FANOUTS[letters.index("r")] if "r" in letters else float("inf")


def test_direct_remote_crossover_moves_to_higher_fanout_with_faster_nics() -> None:
    crossovers = [_crossover(bw) for bw in (100e6, 150e6, 300e6, 600e6)]
    assert crossovers == sorted(crossovers), crossovers
    assert crossovers[0] < crossovers[2] < crossovers[3], crossovers


def _model(pattern: str, n: int, size: float, cal: Calibration | None = None) -> tuple[CostModel, PlacementSpace]:
    app, pred = _edge_app(pattern, n, size)
    problem = build_problem(app, pred, cluster(4, cores=2, calibration=cal or Calibration()))  # type: ignore[arg-type]
    space = PlacementSpace(problem.vms)
    return CostModel(problem, space), space


@pytest.mark.parametrize("pattern", ["broadcast", "scatter"])
def test_direct_pushes_the_bytes_that_cross_the_producer_nic(pattern: str) -> None:
    """Broadcast: one copy per remote consumer; scatter: the output once, in shares."""
    times = []
    for n in (8, 16, 32):   # whole waves of 8 slots on 4 VMs; producer alone on vm0
        model, space = _model(pattern, n, 40 * MB)
        e = model.problem.edges[0]
        pp = space.single(0, 1)
        pc = space.spread(n, [0, 1, 2, 3])
        assert pc is not None
        waves, _, _ = model.stage_terms("c", pc)
        per_wave = max(model.fetch(e, PassingMethod.DIRECT, pp, pc))
        times.append(per_wave * max(waves))
    bandwidth = Calibration().vm_bandwidth_Bps
    if pattern == "broadcast":
        # 3/4 of the consumers are remote: n * 3/4 copies of 40 MB through one NIC.
        for n, seconds in zip((8, 16, 32), times):
            assert seconds == pytest.approx(n * 0.75 * 40 * MB / bandwidth, rel=0.01)
    else:
        # 3/4 of the 40 MB leave vm0, however many consumers share it.
        for seconds in times:
            assert seconds == pytest.approx(0.75 * 40 * MB / bandwidth, rel=0.01)


def test_vm_storage_runs_in_waves_of_cores() -> None:
    previous = 0.0
    for n in range(1, 9):
        app, pred = _edge_app("broadcast", n, MB)
        problem = build_problem(app, pred, cluster(4, cores=2))  # type: ignore[arg-type]
        m = CostModel(problem, PlacementSpace(problem.vms))
        p = m.space.single(0, n)
        seconds = m.stage_time("c", p, [(problem.edges[0], PassingMethod.VM, m.space.single(0, 1))], False)
        waves = -(-n // 2)
        assert seconds >= waves * 1.0
        assert seconds < waves * 1.1
        assert seconds >= previous
        previous = seconds


def test_remote_download_is_capped_by_the_s3_aggregate() -> None:
    cal = Calibration(vm_bandwidth_Bps=10e9, disk_write_Bps=10e9, s3_conn_Bps=1e9, s3_aggregate_Bps=100e6,
                      s3_latency_s=0.0)
    model, space = _model("broadcast", 8, 10 * MB, cal)
    e = model.problem.edges[0]
    pc = space.spread(8, [0, 1, 2, 3])
    assert pc is not None
    # 6 remote consumers download 10 MB each at once, sharing 100 MB/s: 0.6 s.
    assert max(model.fetch(e, PassingMethod.REMOTE, space.single(0, 1), pc)) == pytest.approx(0.6)
