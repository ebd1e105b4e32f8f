"""Extra passing methods in the search space: DP == brute force with them registered.

Two planner-side toy methods (not in ``sonic``; their runtime side is not needed to plan)
join the three built-ins, both fast enough to be chosen in some of the random cases:
``relay`` (a free pull at twice a NIC's rate, one stream's worth per VM, no producer-NIC
limit) and ``archive`` (the producer uploads, as for Remote-Storage; downloads at ten times a
NIC's rate at half the GET price and a quarter of the transfer price). The optimiser must
still return the optimum of the cost model over the larger space, which exercises the
method-specific rules through the methods' flags (``needs_upload``: upload options and
upload modes of producers; ``in_place``: placements that follow).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from planner_cases import Case, cases
from planner_samples import cluster, sort
from test_optimal import _dp_matches_brute_force

from sonic.cluster.spec import Prices
from sonic.passing import MethodId, PassingMethod
from sonic.planner.cost import CostModel
from sonic.planner.methods import PLANNER_METHODS, FetchInputs, planner_methods
from sonic.planner.placement import PlacementSpace
from sonic.planner.problem import build_problem
from sonic.planner.space import allowed_methods, build_space

RELAY = MethodId("relay", "relay")
ARCHIVE = MethodId("archive", "archive")


@dataclass(frozen=True)
class Relay:
    needs_upload: bool = False
    in_place: bool = False

    def vm_seconds(self, f: FetchInputs, streams: int, remote_fraction: float) -> float:
        return f.bytes_per_consumer * remote_fraction / (2 * f.net_in_Bps)

    def download_prices(self, prices: Prices) -> tuple[float, float] | None:
        return None


@dataclass(frozen=True)
class Archive:
    needs_upload: bool = True
    in_place: bool = False

    def vm_seconds(self, f: FetchInputs, streams: int, remote_fraction: float) -> float:
        return streams * f.bytes_per_consumer * remote_fraction / (10 * f.net_in_Bps)

    def download_prices(self, prices: Prices) -> tuple[float, float] | None:
        return prices.s3_get_per_1000 * 0.5, prices.s3_transfer_per_gb * 0.25


@contextmanager
def _extras() -> Iterator[None]:
    PLANNER_METHODS.register(RELAY, Relay())
    PLANNER_METHODS.register(ARCHIVE, Archive())
    try:
        yield
    finally:
        PLANNER_METHODS.unregister(RELAY)
        PLANNER_METHODS.unregister(ARCHIVE)


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(case=cases(), constraint=st.sampled_from([None, None, "budget", "deadline"]),
       factor=st.floats(0.7, 1.6))
def test_dp_matches_brute_force_with_extra_methods(case: Case, constraint: str | None, factor: float) -> None:
    with _extras():
        _dp_matches_brute_force(case, constraint, factor)


def test_the_search_space_holds_registered_methods_after_the_builtins() -> None:
    app, pred = sort()
    problem = build_problem(app, pred, cluster(2))
    space = PlacementSpace(problem.vms)
    builtins = (PassingMethod.VM, PassingMethod.DIRECT, PassingMethod.REMOTE)
    assert set(allowed_methods(problem, "sonic").values()) == {builtins}
    with _extras():
        assert planner_methods() == (*builtins, RELAY, ARCHIVE)
        ss = build_space(problem, space, CostModel(problem, space), "sonic")
        assert set(ss.methods.values()) == {(*builtins, RELAY, ARCHIVE)}
        assert set(allowed_methods(problem, "remote").values()) == {(PassingMethod.REMOTE,)}
    assert planner_methods() == builtins
