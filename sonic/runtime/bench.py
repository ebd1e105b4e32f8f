"""``sonic bench dataplane``: each passing method next to its yardstick, measured in the same run.

Between two VMs of the cluster (vm A produces, vm B consumes):

- Direct-Passing: B pulls an object from A's agent (authenticated, checksummed, written to B's
  store) vs raw TCP between the same two agents (``sendfile`` into a socket, ``recv_into`` a
  buffer: no protocol), measured twice: into memory (the network's limit) and into a file on
  B's data disk (the limit of anything that hands the consumer a file, as every method must).
- Remote-Storage: A uploads to S3 and B downloads (checksummed) vs boto3 alone (upload_file +
  download_file of the same bytes against the same endpoint, boto3 defaults).
- VM-Storage: a consumer on A reads the producer's file in place: passing time 0 and 0 bytes
  copied (the consumer's input is the producer's inode), next to a plain file copy on the disk.
- Warm invocation overhead: round trip of running an empty function on a warm worker.

Each figure is the median of ``repeats`` runs.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import botocore.config

from sonic.cluster.spec import load_cluster
from sonic.errors import ClusterFileError
from sonic.runtime.client import AgentClient
from sonic.runtime.objects import file_checksum
from sonic.runtime.protocol import read_secret
from sonic.runtime.remote import RemoteSettings, RemoteStore

Echo = Callable[[str], None]
BLOCK = 1 << 20


def write_blob(path: Path, size: int) -> None:
    """Incompressible bytes (a random MiB repeated): fast to make, honest for every transport."""
    block = os.urandom(BLOCK)
    with open(path, "wb") as fh:
        left = size
        while left > 0:
            fh.write(block[: min(left, BLOCK)])
            left -= BLOCK


def _mbps(size: int, seconds: float) -> float:
    return size / seconds / 1e6 if seconds > 0 else float("inf")


def run_dataplane_bench(cluster_path: Path, sizes: list[int], *, repeats: int = 3, invocations: int = 50,
                        progress: bool = False, echo: Echo = print) -> dict[str, Any]:
    cluster = load_cluster(cluster_path)
    if len(cluster.vms) < 2:
        raise ClusterFileError("the data-plane benchmark needs 2 VMs; start one with `sonic cluster up --local 2`")
    if not cluster.secret_file:
        raise ClusterFileError("cluster file has no secret_file")
    secret = read_secret(cluster.secret_file)
    vm_a, vm_b = cluster.vms[0], cluster.vms[1]
    a = AgentClient(vm_a.host, vm_a.agent_port, secret, vm_a.name)
    b = AgentClient(vm_b.host, vm_b.agent_port, secret, vm_b.name)
    rs = cluster.remote_storage
    remote = RemoteStore(RemoteSettings.for_cluster(cluster))
    remote.ensure_bucket()
    settings = RemoteSettings.for_cluster(cluster)
    plain_s3 = boto3.session.Session(aws_access_key_id=settings.access_key,
                                     aws_secret_access_key=settings.secret_key).client(
        "s3", endpoint_url=rs.endpoint_url, config=botocore.config.Config(region_name=rs.region))
    job = "bench-" + uuid.uuid4().hex[:12]
    tmp = Path(tempfile.mkdtemp(prefix="sonic-bench-"))
    rows: list[dict[str, Any]] = []
    try:
        a.ping(), b.ping()
        for size in sizes:
            if progress:
                echo(f"benchmarking {size / 1e6:.0f} MB objects between {vm_a.name} and {vm_b.name} ...")
            blob = tmp / "blob"
            write_blob(blob, size)
            checksum = file_checksum(blob)
            key = f"bench/0/obj-{size}"
            a.put_file(job, key, blob, checksum)
            item = {"stage": "bench", "instance": 0, "name": f"obj-{size}", "size": size, "checksum": checksum}
            raw, raw_file, direct, ours, yard, vm_read, copy = [], [], [], [], [], [], []
            for _ in range(repeats):
                port = a.call("rawtcp_serve", size=size)["port"]
                raw.append(b.call("rawtcp_pull", size=size, host=vm_a.host, port=port, timeout=None)["seconds"])
                port = a.call("rawtcp_serve", size=size)["port"]
                raw_file.append(b.call("rawtcp_pull", size=size, host=vm_a.host, port=port, to_file=True,
                                       timeout=None)["seconds"])
                b.drop(job)
                direct.append(b.call("fetch", job=job, timeout=None,
                                     item={**item, "method": "direct", "vm": vm_a.name, "host": vm_a.host,
                                           "port": vm_a.agent_port})["seconds"])
                b.drop(job)
                up = a.call("push", job=job, key=key, timeout=None)["seconds"]
                down = b.call("fetch", job=job, item={**item, "method": "remote"}, timeout=None)["seconds"]
                ours.append(up + down)
                b.drop(job)
                remote.delete_prefix(f"{job}/")
                t0 = time.perf_counter()
                plain_s3.upload_file(str(blob), rs.bucket, f"{job}/plain")
                plain_s3.download_file(rs.bucket, f"{job}/plain", str(tmp / "down"))
                yard.append(time.perf_counter() - t0)
                remote.delete_prefix(f"{job}/")
                local = a.call("fetch", job=job, item={**item, "method": "local"})
                vm_read.append(local["seconds"])
                t0 = time.perf_counter()
                shutil.copyfile(blob, tmp / "copy")
                copy.append(time.perf_counter() - t0)
                (tmp / "copy").unlink()
            produced_inode = a.call("fetch", job=job, item={**item, "method": "local"})["inode"]
            row = {
                "bytes": size,
                "rawtcp_MBps": _mbps(size, statistics.median(raw)),
                "rawtcp_file_MBps": _mbps(size, statistics.median(raw_file)),
                "direct_MBps": _mbps(size, statistics.median(direct)),
                "boto3_MBps": _mbps(size, statistics.median(yard)),
                "remote_MBps": _mbps(size, statistics.median(ours)),
                "vm_passing_s": statistics.median(vm_read),
                "vm_copied_bytes": 0 if produced_inode == local["inode"] else size,
                "disk_copy_MBps": _mbps(size, statistics.median(copy)),
            }
            row["direct_vs_rawtcp"] = row["direct_MBps"] / row["rawtcp_MBps"]
            row["direct_vs_rawtcp_file"] = row["direct_MBps"] / row["rawtcp_file_MBps"]
            row["remote_vs_boto3"] = row["remote_MBps"] / row["boto3_MBps"]
            rows.append(row)
            if progress:
                echo(f"  raw TCP {row['rawtcp_MBps']:6.0f} MB/s (to file {row['rawtcp_file_MBps']:6.0f})  "
                     f"direct {row['direct_MBps']:6.0f} MB/s ({row['direct_vs_rawtcp']:.2f}x, "
                     f"{row['direct_vs_rawtcp_file']:.2f}x of to-file)  boto3 {row['boto3_MBps']:6.0f} MB/s  "
                     f"remote {row['remote_MBps']:6.0f} MB/s ({row['remote_vs_boto3']:.2f}x)  "
                     f"vm: {row['vm_copied_bytes']} bytes copied")
            a.drop(job)
        overhead = invocation_overhead(a, invocations)
        if progress:
            echo(f"warm invocation overhead: median {overhead['median_ms']:.2f} ms, p90 {overhead['p90_ms']:.2f} ms")
        return {"vm_a": vm_a.name, "vm_b": vm_b.name, "repeats": repeats, "sizes": rows,
                "invocation_overhead_ms": overhead}
    finally:
        for client in (a, b):
            client.drop(job)
            client.close()
        remote.delete_prefix(f"{job}/")
        shutil.rmtree(tmp, ignore_errors=True)


def invocation_overhead(agent: AgentClient, n: int) -> dict[str, float]:
    """Round trip of an empty function on a warm worker, as the coordinator sees it."""
    app = "sonic.runtime.benchapp:noop"
    agent.warm(app)
    request = {"job": "bench-noop", "app": app, "stage": "nothing", "index": 0, "num_instances": 1,
               "key": None, "inputs": [], "upload": False}
    agent.run(request)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        agent.run(request)
        times.append((time.perf_counter() - t0) * 1000)
    agent.drop("bench-noop")
    times.sort()
    return {"median_ms": statistics.median(times), "p90_ms": times[int(0.9 * (len(times) - 1))], "n": n}
