"""An object corrupted after it was produced is never consumed: the consumer's agent detects
the checksum mismatch (in place for VM-Storage, while receiving for Direct-Passing, after
download for Remote-Storage), the job regenerates the object by re-running its producer (on
another VM), and completes with output the validator accepts: sort's validator checks an
order-independent checksum of every record, so a single consumed bad byte would fail it.

Deterministic injection: the coordinator's event observer fires when ``split`` reports
success, before any consumer is dispatched, and damages one chunk right then. Split's chunks
are partitions of one packed object (every out-edge of split is a scatter), so the damage is
inside that chunk's byte range of the pack: a corrupt partition is detected per partition.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from reliability_helpers import make_coordinator, stage_objects

from sonic.app import load_app
from sonic.cluster.spec import ClusterSpec
from sonic.plan import PassingMethod, fixed_plan
from sonic.runtime.remote import RemoteSettings, RemoteStore
from sonic.runtime.scheduler import Event, InstanceFinished


def damage_in_place(path: Path, offset: int = 0, size: int | None = None) -> None:
    """Flip bytes in the middle of the file (or of its range ``offset``, ``size``), keeping its
    size (what bit rot looks like)."""
    size = path.stat().st_size if size is None else size
    with open(path, "r+b") as fh:
        fh.seek(offset + size // 2)
        chunk = fh.read(16)
        fh.seek(offset + size // 2)
        fh.write(bytes(b ^ 0xFF for b in chunk))


@pytest.mark.parametrize("method", [PassingMethod.VM, PassingMethod.DIRECT, PassingMethod.REMOTE])
def test_corrupt_object_is_regenerated_not_consumed(shared_cluster: ClusterSpec, sort_input: Path,
                                                    method: PassingMethod) -> None:
    app = load_app("sort")
    damaged: list[str] = []
    remote = RemoteStore(RemoteSettings.for_cluster(shared_cluster))

    def observer(event: Event) -> None:
        if damaged or not isinstance(event, InstanceFinished) or event.stage != "split":
            return
        name, size, _ = event.outputs[1]
        stored, offset = event.ranges.get(name, (name, 0))
        (path,) = [p for p in stage_objects(shared_cluster, "split") if p.name == stored]
        if method is PassingMethod.REMOTE:
            # Damage the copy consumers will download: the object in the bucket.
            job = path.parents[2].name
            key = f"{job}/split/0/{stored}"
            head = remote.client.head_object(Bucket=remote.settings.bucket, Key=key)
            data = bytearray(remote.client.get_object(Bucket=remote.settings.bucket, Key=key)["Body"].read())
            data[offset + size // 2] ^= 0xFF
            remote.client.put_object(Bucket=remote.settings.bucket, Key=key, Body=bytes(data),
                                     Metadata=head["Metadata"])
            # The producer's local copy would let a consumer on its VM read in place: damage it too.
        damage_in_place(path, offset, size)
        damaged.append(name)

    coordinator = make_coordinator(shared_cluster, observer=observer)
    try:
        result = coordinator.execute(app, "sort", sort_input, fixed_plan(app, method, shared_cluster.vm_names))
    finally:
        coordinator.close()
    assert damaged, "the fault was not injected"
    assert result.output_ok, result.output_detail
    splits = [m for m in result.instances if m.stage == "split"]
    assert len(splits) == 2, "split must have been re-run to regenerate the damaged chunk"
    assert splits[0].vm != splits[1].vm, "the re-run goes to another VM"
