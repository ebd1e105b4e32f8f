"""A Remote-Storage shuffle stores one packed object per producer instance (issue 12): sort on
a real loopback cluster validates with every fixed strategy; with Remote-Storage its run report
shows M objects stored for the M x R shuffle, the bucket holds M map objects and the consumers
make one ranged GET per mapper. ``pack_outputs=False`` keeps the old one-object-per-file layout
(M x R objects, M x R PUTs)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sonic.app import load_app
from sonic.cluster.spec import ClusterSpec
from sonic.emulation.local import HarnessOptions, local_cluster
from sonic.inputs import generate_input
from sonic.plan import ParallelismChoice, PassingMethod, Plan, fixed_plan
from sonic.runtime.coordinator import Coordinator
from sonic.runtime.protocol import read_secret
from sonic.runtime.remote import RemoteSettings, RemoteStore
from sonic.runtime.scheduler import Event, InstanceFinished

SIZE = 6_000_000
MAPS, REDUCES = 3, 5


@pytest.fixture(scope="module")
def loopback(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSpec]:
    with local_cluster(2, "loopback", tmp_path_factory.mktemp("packed"),
                       options=HarnessOptions(ssh_config_path=None)) as spec:
        yield spec


@pytest.fixture(scope="module")
def sort_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_input(load_app("sort"), tmp_path_factory.mktemp("in") / "sort.in", SIZE, seed=3)


def plan_for(vms: list[str], strategy: str) -> Plan:
    plan = fixed_plan(load_app("sort"), PassingMethod(strategy), vms)
    for stage, n in (("map", MAPS), ("reduce", REDUCES)):
        plan.stages[stage].instances = n
        plan.stages[stage].placement = {vms[0]: n} if strategy == "vm" else {vms[0]: n - n // 2, vms[1]: n // 2}
        plan.stages[stage].parallelism = ParallelismChoice(1, 256, n)
    if strategy == "vm":
        plan.stages["split"].placement = {vms[0]: 1}
    return plan


def _run(spec: ClusterSpec, strategy: str, sort_input: Path, *, pack: bool = True,
         observer: object = None) -> dict[str, object]:
    assert spec.secret_file
    coord = Coordinator(spec, read_secret(spec.secret_file), pack_outputs=pack, observer=observer)  # type: ignore[arg-type]
    try:
        result = coord.execute(load_app("sort"), "sort", sort_input, plan_for(spec.vm_names, strategy))
    finally:
        coord.close()
    assert result.output_ok, result.output_detail
    return result.to_json()


@pytest.mark.parametrize("strategy", ["vm", "direct", "remote"])
def test_sort_stores_one_object_per_mapper(loopback: ClusterSpec, sort_input: Path, strategy: str) -> None:
    report = _run(loopback, strategy, sort_input)
    edges = {(e["src"], e["dst"]): e for e in report["edges"]}  # type: ignore[union-attr]
    stages = {s["name"]: s["instances"] for s in report["stages"]}  # type: ignore[union-attr]
    assert stages == {"split": 1, "map": MAPS, "reduce": REDUCES}
    # The run report: objects stored per shuffle = producer instances (not M x R) for
    # Remote-Storage; Direct and VM-Storage keep one file per partition (no copies to pay).
    packed = strategy == "remote"
    assert edges[("map", "reduce")]["objects_stored"] == (MAPS if packed else MAPS * REDUCES)
    assert edges[("split", "map")]["objects_stored"] == (1 if packed else MAPS)
    assert all(e["method"] == strategy for e in edges.values())
    assert edges[("map", "reduce")]["bytes"] == SIZE


def test_remote_shuffle_is_m_objects_read_by_m_times_r_ranged_gets(loopback: ClusterSpec, sort_input: Path) -> None:
    remote = RemoteStore(RemoteSettings.for_cluster(loopback))
    seen: dict[str, object] = {}

    def observer(event: Event) -> None:
        # When the first reducer finishes, every map object is in the bucket (stage barrier).
        if isinstance(event, InstanceFinished) and event.stage == "reduce" and "keys" not in seen:
            listed = remote.client.list_objects_v2(Bucket=remote.settings.bucket)
            seen["keys"] = [o["Key"] for o in listed.get("Contents", [])]

    report = _run(loopback, "remote", sort_input, observer=observer)
    map_keys = [k for k in seen["keys"] if "/map/" in k]  # type: ignore[union-attr]
    assert len(map_keys) == MAPS and all(k.endswith("/_packed") for k in map_keys), map_keys
    # Requests: one PUT per split and map instance (reduce is the sink); one GET of the app
    # input, then one ranged GET per (consumer, producer) on different VMs (a consumer on the
    # producer's VM reads its range there, whatever the method).
    vm = {(m["stage"], m["instance"]): m["vm"] for m in report["instances"]}  # type: ignore[union-attr]
    assert len([k for k in vm if k[0] == "reduce"]) == REDUCES
    crossing = sum(vm[("map", i)] != vm[("split", 0)] for i in range(MAPS)) + sum(
        vm[("reduce", r)] != vm[("map", m)] for r in range(REDUCES) for m in range(MAPS))
    assert report["s3_requests"] == {"put": 1 + MAPS, "get": 1 + crossing}


def test_unpacked_layout_still_runs_and_stores_m_times_r(loopback: ClusterSpec, sort_input: Path) -> None:
    report = _run(loopback, "remote", sort_input, pack=False)
    edges = {(e["src"], e["dst"]): e for e in report["edges"]}  # type: ignore[union-attr]
    assert edges[("map", "reduce")]["objects_stored"] == MAPS * REDUCES
    assert report["s3_requests"]["put"] == MAPS + MAPS * REDUCES  # split's chunks + every partition
