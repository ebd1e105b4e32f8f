"""Planner side of the passing methods: each method's cost terms, one hook object per method
in an explicit registry keyed by method name (see ``sonic.passing`` and docs/architecture.md,
"Passing methods"). ``CostModel.fetch`` and ``CostModel.download_dollars`` look the edge's
method up here; the layout of the bytes (``CostModel.flow``) is shared by all methods. The
search space (``space``, ``optimise``, ``assemble``, ``incumbent``, ``bruteforce``) enumerates
:func:`planner_methods` and reads the rules that differ by method from the hooks' flags
(:func:`in_place`: the consumer follows its input; :func:`needs_upload`). Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sonic.cluster.spec import Calibration, Prices
from sonic.passing import MethodRegistry, PassingMethod, PlanMethod


@dataclass(frozen=True)
class FetchInputs:
    """What a method's fetch term sees of one edge into one consumer placement."""

    cal: Calibration
    net_in_Bps: float            # a VM's receive rate (NIC, disk write)
    net_out_Bps: float           # a VM's send rate (NIC, disk read)
    bytes_per_consumer: float    # b
    objects_per_consumer: float  # k
    max_egress: float            # the busiest producer NIC, in consumer inputs
    transfer_slots: int          # transfers at once over the cluster


class PlannerMethod(Protocol):
    """What the planner needs to know about one method."""

    @property
    def needs_upload(self) -> bool:
        """The producer must upload its outputs for a consumer to fetch by this method."""
        ...

    @property
    def in_place(self) -> bool:
        """The consumer reads the producer's file where it lies: no fetch at all."""
        ...

    def vm_seconds(self, f: FetchInputs, streams: int, remote_fraction: float) -> float:
        """Seconds one consumer VM spends fetching the ``remote_fraction`` (> 0) of an input
        not on it, with ``streams`` fetches into it at once."""
        ...

    def download_prices(self, prices: Prices) -> tuple[float, float] | None:
        """(dollars per 1000 requests, per GB) of fetching by this method; ``None``: free."""
        ...


@dataclass(frozen=True)
class VMStorage:
    """VM-Storage: the consumer runs on the producer's VM and reads the file in place."""

    needs_upload: bool = False
    in_place: bool = True

    def vm_seconds(self, f: FetchInputs, streams: int, remote_fraction: float) -> float:
        return 0.0

    def download_prices(self, prices: Prices) -> tuple[float, float] | None:
        return None


@dataclass(frozen=True)
class DirectPassing:
    """Direct-Passing: a pull from the producer's agent, limited by the consumer's NIC and the
    busiest producer's."""

    needs_upload: bool = False
    in_place: bool = False

    def vm_seconds(self, f: FetchInputs, streams: int, remote_fraction: float) -> float:
        b = f.bytes_per_consumer
        producer_side = f.max_egress * b / f.net_out_Bps
        latency = f.cal.vm_latency_s * f.objects_per_consumer
        return latency * remote_fraction + max(streams * b * remote_fraction / f.net_in_Bps, producer_side)

    def download_prices(self, prices: Prices) -> tuple[float, float] | None:
        return None


@dataclass(frozen=True)
class RemoteStorage:
    """Remote-Storage: the producer uploads to S3, the consumer downloads (per connection,
    NIC and aggregate S3 limits; GETs and transfer are paid)."""

    needs_upload: bool = True
    in_place: bool = False

    def vm_seconds(self, f: FetchInputs, streams: int, remote_fraction: float) -> float:
        cal = f.cal
        aggregate = cal.s3_aggregate_Bps / f.transfer_slots if f.transfer_slots else 0.0
        latency = cal.s3_latency_s * f.objects_per_consumer
        rate = min(cal.s3_conn_Bps, f.net_in_Bps / streams, aggregate)
        return latency * remote_fraction + f.bytes_per_consumer * remote_fraction / rate

    def download_prices(self, prices: Prices) -> tuple[float, float] | None:
        return prices.s3_get_per_1000, prices.s3_transfer_per_gb


PLANNER_METHODS: MethodRegistry[PlannerMethod] = MethodRegistry("planner")
PLANNER_METHODS.register(PassingMethod.VM, VMStorage())
PLANNER_METHODS.register(PassingMethod.DIRECT, DirectPassing())
PLANNER_METHODS.register(PassingMethod.REMOTE, RemoteStorage())


def planner_methods() -> tuple[PlanMethod, ...]:
    """Every method the planner may choose, as plans hold them, in registration order: the
    built-ins VM, DIRECT, REMOTE (this order is the optimiser's tie-break), then extra ones."""
    return tuple(ident.in_plan for ident in PLANNER_METHODS.methods())


def in_place(method: PlanMethod) -> bool:
    """The consumer reads its input where the producer wrote it, so it must be placed on the
    producer's VM(s) (``PlacementSpace.follow``): VM-Storage's rule."""
    return PLANNER_METHODS.get(method).in_place


def needs_upload(method: PlanMethod) -> bool:
    """The producer must upload its outputs for this edge: Remote-Storage's rule."""
    return PLANNER_METHODS.get(method).needs_upload
