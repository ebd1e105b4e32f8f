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
- S3 server capacity: aggregate put and get MB/s of several concurrent boto3 clients against
  the cluster's S3 endpoint vs the same threads copying the same bytes between local files
  (``sonic.runtime.s3load``), interleaved: is the (embedded) S3 server the bottleneck?

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
from sonic.runtime.s3load import S3Target, file_aggregate, s3_aggregate

Echo = Callable[[str], None]
BLOCK = 1 << 20
# S3 capacity probe: enough clients to keep a server busy on 2 cores; one put_object per
# object (no multipart), large enough that per-request costs do not dominate.
S3_CLIENTS = 4
S3_OBJECT_SIZE = 16 * 1024 * 1024


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
                raw.append(b.rawtcp_pull(size, vm_a.host, a.rawtcp_serve(size)))
                raw_file.append(b.rawtcp_pull(size, vm_a.host, a.rawtcp_serve(size), to_file=True))
                b.drop(job)
                direct.append(b.fetch(job, {**item, "method": "direct", "vm": vm_a.name, "host": vm_a.host,
                                            "port": vm_a.agent_port}, timeout=None).seconds)
                b.drop(job)
                up = a.push(job, key)
                down = b.fetch(job, {**item, "method": "remote"}, timeout=None).seconds
                ours.append(up + down)
                b.drop(job)
                remote.delete_prefix(f"{job}/")
                t0 = time.perf_counter()
                plain_s3.upload_file(str(blob), rs.bucket, f"{job}/plain")
                plain_s3.download_file(rs.bucket, f"{job}/plain", str(tmp / "down"))
                yard.append(time.perf_counter() - t0)
                remote.delete_prefix(f"{job}/")
                local = a.fetch(job, {**item, "method": "local"})
                vm_read.append(local.seconds)
                t0 = time.perf_counter()
                shutil.copyfile(blob, tmp / "copy")
                copy.append(time.perf_counter() - t0)
                (tmp / "copy").unlink()
            produced_inode = a.fetch(job, {**item, "method": "local"}).inode
            row = {
                "bytes": size,
                "rawtcp_MBps": _mbps(size, statistics.median(raw)),
                "rawtcp_file_MBps": _mbps(size, statistics.median(raw_file)),
                "direct_MBps": _mbps(size, statistics.median(direct)),
                "boto3_MBps": _mbps(size, statistics.median(yard)),
                "remote_MBps": _mbps(size, statistics.median(ours)),
                "vm_passing_s": statistics.median(vm_read),
                "vm_copied_bytes": 0 if produced_inode == local.inode else size,
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
            echo(f"S3 aggregate: {S3_CLIENTS} concurrent boto3 clients vs local files ...")
        s3_capacity = s3_aggregate_rows(S3Target(rs.endpoint_url or "", rs.bucket, settings.access_key,
                                                 settings.secret_key, rs.region), tmp, repeats)
        return {"vm_a": vm_a.name, "vm_b": vm_b.name, "repeats": repeats, "sizes": rows,
                "invocation_overhead_ms": overhead, "s3_aggregate": s3_capacity}
    finally:
        for client in (a, b):
            client.drop(job)
            client.close()
        remote.delete_prefix(f"{job}/")
        shutil.rmtree(tmp, ignore_errors=True)


def s3_aggregate_rows(target: S3Target, tmp: Path, repeats: int, *, clients: int = S3_CLIENTS,
                      object_size: int = S3_OBJECT_SIZE, objects_per_client: int = 2) -> dict[str, Any]:
    """S3 server capacity next to its yardstick, interleaved ``repeats`` times: median, min, max."""
    source = tmp / "s3-aggregate-object"
    write_blob(source, object_size)
    scratch = tmp / "s3-aggregate"
    scratch.mkdir(exist_ok=True)
    runs: dict[str, list[float]] = {"s3_put": [], "s3_get": [], "file_put": [], "file_get": []}
    try:
        for _ in range(repeats):
            s3 = s3_aggregate(target, source, scratch, clients=clients, objects_per_client=objects_per_client)
            disk = file_aggregate(source, scratch, clients=clients, objects_per_client=objects_per_client)
            runs["s3_put"].append(s3.put_MBps)
            runs["s3_get"].append(s3.get_MBps)
            runs["file_put"].append(disk.put_MBps)
            runs["file_get"].append(disk.get_MBps)
    finally:
        source.unlink(missing_ok=True)
        shutil.rmtree(scratch, ignore_errors=True)
    doc: dict[str, Any] = {"clients": clients, "object_bytes": object_size, "objects_per_client": objects_per_client}
    for name, values in runs.items():
        doc[f"{name}_MBps"] = statistics.median(values)
        doc[f"{name}_MBps_min"] = min(values)
        doc[f"{name}_MBps_max"] = max(values)
    doc["s3_vs_file_put"] = doc["s3_put_MBps"] / doc["file_put_MBps"]
    doc["s3_vs_file_get"] = doc["s3_get_MBps"] / doc["file_get_MBps"]
    return doc


def format_dataplane_table(report: dict[str, Any]) -> str:
    """The report as plain-text tables (what ``sonic bench dataplane`` prints to stdout)."""
    lines = [f"data plane between {report['vm_a']} and {report['vm_b']}, MB/s, median of {report['repeats']} runs",
             f"{'size':>8} {'raw TCP':>8} {'to file':>8} {'direct':>8} {'d/file':>6} "
             f"{'boto3':>8} {'remote':>8} {'r/boto3':>7} {'vm copied':>10} {'disk copy':>9}"]
    for row in report["sizes"]:
        lines.append(f"{row['bytes'] / 1e6:>6.0f}MB {row['rawtcp_MBps']:8.0f} {row['rawtcp_file_MBps']:8.0f} "
                     f"{row['direct_MBps']:8.0f} {row['direct_vs_rawtcp_file']:6.2f} {row['boto3_MBps']:8.0f} "
                     f"{row['remote_MBps']:8.0f} {row['remote_vs_boto3']:7.2f} {row['vm_copied_bytes']:>9}B "
                     f"{row['disk_copy_MBps']:9.0f}")
    overhead = report["invocation_overhead_ms"]
    lines.append(f"warm invocation overhead: median {overhead['median_ms']:.2f} ms, p90 {overhead['p90_ms']:.2f} ms")
    agg = report.get("s3_aggregate")
    if agg:
        lines.append(f"S3 server capacity: {agg['clients']} concurrent clients x {agg['objects_per_client']} objects "
                     f"of {agg['object_bytes'] / 2**20:.0f} MiB, aggregate MB/s, median (min-max)")
        for label, key in (("S3 (boto3)", "s3"), ("yardstick: local files", "file")):
            lines.append(f"  {label:<24} put {agg[f'{key}_put_MBps']:6.0f} ({agg[f'{key}_put_MBps_min']:.0f}-"
                         f"{agg[f'{key}_put_MBps_max']:.0f})  get {agg[f'{key}_get_MBps']:6.0f} "
                         f"({agg[f'{key}_get_MBps_min']:.0f}-{agg[f'{key}_get_MBps_max']:.0f})")
        lines.append(f"  S3 / yardstick: put {agg['s3_vs_file_put']:.2f}x, get {agg['s3_vs_file_get']:.2f}x")
    return "\n".join(lines)


def object_overhead_s(agent: AgentClient, files: int = 200, repeats: int = 3) -> float:
    """Seconds per output object an instance writes (create, checksum, register) beyond the
    bytes, from a warm worker: (run writing ``files`` 1 KB objects - empty run) / ``files``."""
    app = "sonic.runtime.benchapp:files"
    agent.warm(app)
    job = "bench-files-" + uuid.uuid4().hex[:8]

    def timed(n: int, index: int) -> float:
        request = {"job": job, "app": app, "stage": "write_files", "index": index, "num_instances": 1,
                   "key": str(n), "inputs": [], "upload": False}
        t0 = time.perf_counter()
        agent.run(request)
        return time.perf_counter() - t0

    try:
        timed(0, 0)
        empty = [timed(0, 1 + i) for i in range(repeats)]
        full = [timed(files, 100 + i) for i in range(repeats)]
    finally:
        agent.drop(job)
    return max(statistics.median(full) - statistics.median(empty), 0.0) / files


def direct_object_latency_s(puller: AgentClient, holder: AgentClient, holder_vm: Any, n: int = 20) -> float:
    """Seconds a direct pull of one small object costs (request, file, checksum): what the
    cost model charges per object of a Direct-Passing edge beyond its bytes."""
    job = "bench-direct-" + uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="sonic-calib-"))
    seconds: list[float] = []
    try:
        blob = tmp / "small"
        write_blob(blob, 1024)
        checksum = file_checksum(blob)
        for i in range(n):
            holder.put_file(job, f"calib/0/o{i}", blob, checksum)
            item = {"stage": "calib", "instance": 0, "name": f"o{i}", "size": 1024, "checksum": checksum,
                    "method": "direct", "vm": holder_vm.name, "host": holder_vm.host, "port": holder_vm.agent_port}
            seconds.append(puller.fetch(job, item).seconds)
    finally:
        puller.drop(job)
        holder.drop(job)
        shutil.rmtree(tmp, ignore_errors=True)
    return statistics.median(seconds)


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
