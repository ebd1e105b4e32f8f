"""Partitioned outputs with ranged reads (issue 12): one packed object per producer instance,
each consumer fetches only its partition, by every method, verified per partition.

Real agents on a loopback cluster of 2 VMs: the pack is stored on vm0 (and in the cluster's
embedded S3), partitions are fetched with the agent's ``fetch`` op exactly as a run's inputs are
(``ensure_local``): ``local`` on vm0 (copied out of the pack in the kernel), ``direct`` on vm1
(ranged ``get`` served with ``sendfile(offset, count)``), ``remote`` on vm1 (ranged GET).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sonic.cluster.spec import ClusterSpec
from sonic.emulation.local import HarnessOptions, local_cluster
from sonic.errors import CorruptObjectError
from sonic.runtime.agent import Agent, AgentConfig
from sonic.runtime.client import AgentClient, RemoteCallError, Timeouts
from sonic.runtime.objects import PACK_INDEX_SUFFIX, PACK_NAME, Pack, pack_outputs
from sonic.runtime.protocol import read_secret
from sonic.runtime.remote import RemoteSettings, RemoteStore

SIZES = [70_000, 0, 1, 1_500_003, 4096]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSpec]:
    with local_cluster(2, "loopback", tmp_path_factory.mktemp("ranged"),
                       options=HarnessOptions(ssh_config_path=None)) as spec:
        yield spec


def _clients(spec: ClusterSpec) -> dict[str, AgentClient]:
    assert spec.secret_file
    secret = read_secret(spec.secret_file)
    return {vm.name: AgentClient(vm.host, vm.agent_port, secret, vm.name, Timeouts(connect_s=5, control_s=30))
            for vm in spec.vms}


def _make_pack(root: Path) -> tuple[Pack, dict[str, bytes]]:
    rng = random.Random(12)
    names = [f"part-{i}" for i in range(len(SIZES))]
    data = {n: rng.randbytes(s) for n, s in zip(names, SIZES)}
    root.mkdir(parents=True)
    for name, blob in data.items():
        (root / name).write_bytes(blob)
    return pack_outputs(root, names), data


@pytest.fixture
def staged(cluster: ClusterSpec, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A pack of 5 partitions (one empty) on vm0 and in S3, under a fresh job."""
    job = uuid.uuid4().hex[:12]
    pack, data = _make_pack(tmp_path / "out")
    packed = tmp_path / "out" / PACK_NAME
    assert not (tmp_path / "out" / "part-0").exists() and (tmp_path / "out" / (PACK_NAME + PACK_INDEX_SUFFIX)).exists()
    clients = _clients(cluster)
    clients["vm0"].put_file(job, f"p/0/{PACK_NAME}", packed, pack.checksum)
    remote = RemoteStore(RemoteSettings.for_cluster(cluster))
    remote.ensure_bucket()
    remote.upload(packed, f"{job}/p/0/{PACK_NAME}", pack.checksum)
    try:
        yield {"job": job, "pack": pack, "data": data, "clients": clients, "remote": remote}
    finally:
        for client in clients.values():
            client.drop(job)
            client.close()
        remote.delete_prefix(f"{job}/")


def _item(cluster: ClusterSpec, pack: Pack, name: str, method: str) -> dict[str, Any]:
    (part,) = [p for p in pack.partitions if p.name == name]
    item: dict[str, Any] = {"stage": "p", "instance": 0, "name": name, "size": part.length, "checksum": part.checksum,
                            "method": method, "pack": PACK_NAME, "offset": part.offset}
    if method == "direct":
        vm0 = cluster.vm("vm0")
        item.update(vm="vm0", host=vm0.host, port=vm0.agent_port)
    return item


def _damage(path: Path, at: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(at)
        byte = fh.read(1)
        fh.seek(at)
        fh.write(bytes([byte[0] ^ 0xFF]))


CONSUMER = {"local": "vm0", "direct": "vm1", "remote": "vm1"}


@pytest.mark.parametrize("method", ["local", "direct", "remote"])
def test_each_consumer_gets_exactly_its_partition(cluster: ClusterSpec, staged: dict[str, Any], method: str) -> None:
    client = staged["clients"][CONSUMER[method]]
    for part in staged["pack"].partitions:
        reply = client.call("fetch", job=staged["job"], item=_item(cluster, staged["pack"], part.name, method))
        assert Path(reply["path"]).read_bytes() == staged["data"][part.name], (method, part.name)
    # The producer VM stores one object, not one per partition (copies made for local consumers
    # aside, which live in the consumer's place of the key space, not as new producer objects).
    pack_dir = Path(cluster.vm("vm0").data_dir) / "objects" / staged["job"] / "p" / "0"
    assert (pack_dir / PACK_NAME).stat().st_size == sum(SIZES)


@pytest.mark.parametrize("method", ["local", "direct", "remote"])
def test_a_damaged_copy_of_a_partition_is_detected_and_fetched_again(cluster: ClusterSpec, staged: dict[str, Any],
                                                                     method: str) -> None:
    client = staged["clients"][CONSUMER[method]]
    item = _item(cluster, staged["pack"], "part-3", method)
    first = Path(client.call("fetch", job=staged["job"], item=item)["path"])
    _damage(first, 1000)
    again = client.call("fetch", job=staged["job"], item=item)
    assert again["seconds"] > 0, "the damaged copy must be fetched again, not reused"
    assert Path(again["path"]).read_bytes() == staged["data"]["part-3"]


@pytest.mark.parametrize("method", ["local", "direct", "remote"])
def test_a_corrupt_partition_at_its_source_is_refused(cluster: ClusterSpec, staged: dict[str, Any],
                                                       method: str) -> None:
    pack: Pack = staged["pack"]
    (part,) = [p for p in pack.partitions if p.name == "part-0"]
    source = Path(cluster.vm("vm0").data_dir) / "objects" / staged["job"] / "p" / "0" / PACK_NAME
    if method == "remote":
        remote: RemoteStore = staged["remote"]
        blob = bytearray(source.read_bytes())
        blob[part.offset + 7] ^= 0xFF
        remote.client.put_object(Bucket=remote.settings.bucket, Key=f"{staged['job']}/p/0/{PACK_NAME}", Body=bytes(blob))
    else:
        _damage(source, part.offset + 7)
    with pytest.raises(RemoteCallError) as info:
        staged["clients"][CONSUMER[method]].call("fetch", job=staged["job"], item=_item(cluster, pack, "part-0", method))
    assert info.value.cause == "corrupt", info.value
    # The other partitions of the same pack are intact and still served.
    other = _item(cluster, pack, "part-3", method)
    reply = staged["clients"][CONSUMER[method]].call("fetch", job=staged["job"], item=other)
    assert Path(reply["path"]).read_bytes() == staged["data"]["part-3"]


def test_a_partition_corrupted_in_transit_is_fetched_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The receiving agent retries a partition whose bytes failed their checksum once before it
    declares the object corrupt (in-process agent, the peer replaced by one that lies once)."""
    config = AgentConfig("vmx", "127.0.0.1", 0, tmp_path / "agent", b"s" * 32, 1, 1024, None)
    agent = Agent(config)
    good = b"partition bytes" * 100
    import xxhash

    calls: list[int] = []

    class FlakyPeer:
        def get_to_file(self, job: str, key: str, path: Path, *, size: int | None = None,
                        checksum: str | None = None, offset: int | None = None) -> float:
            calls.append(offset or 0)
            assert key == f"p/0/{PACK_NAME}" and size == len(good)
            if len(calls) == 1:
                raise CorruptObjectError("object failed its size/checksum check")
            path.write_bytes(good)
            return 0.01

    monkeypatch.setattr(agent.fetcher, "peer", lambda *args: FlakyPeer())
    item = {"stage": "p", "instance": 0, "name": "part-9", "size": len(good),
            "checksum": xxhash.xxh3_128(good).hexdigest(), "method": "direct", "vm": "vm0", "host": "127.0.0.1",
            "port": 1, "pack": PACK_NAME, "offset": 4096}
    try:
        path, _ = agent.fetcher.ensure_local("job1", item)
        assert path.read_bytes() == good and calls == [4096, 4096]
    finally:
        agent.stop()
