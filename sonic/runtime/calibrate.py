"""``sonic cluster calibrate``: measure the cost-model inputs on the actual cluster.

Everything the planner's cost model uses comes from here (DESIGN.md section 6): VM-to-VM
bandwidth (raw TCP between two agents) and latency (authenticated ping round trip), disk
write/read bandwidth (on a VM's data disk, fsync'd), S3 per-request latency (small-object
upload + download from an agent), per-connection bandwidth (one object below the multipart
threshold) and aggregate bandwidth (every VM downloading at once), warm invocation overhead and
cold start (a fresh worker process importing the app). Results go into the cluster file.
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sonic.cluster.spec import Calibration, load_cluster
from sonic.errors import ClusterFileError
from sonic.runtime.bench import direct_object_latency_s, invocation_overhead, object_overhead_s, write_blob
from sonic.runtime.client import AgentClient
from sonic.runtime.compute_speed import MIN_SECONDS, compute_factors
from sonic.runtime.dispatch_cycle import TOUCH_OBJECTS, dispatch_gap_s
from sonic.runtime.objects import file_checksum
from sonic.runtime.protocol import read_secret
from sonic.runtime.remote import RemoteSettings, RemoteStore

Echo = Callable[[str], None]
MB = 1_000_000


def calibrate_cluster(cluster_path: Path, *, progress: bool = False, echo: Echo = print,
                      net_bytes: int = 64 * MB, disk_bytes: int = 64 * MB, s3_bytes: int = 8 * MB,
                      repeats: int = 3) -> dict[str, Any]:
    cluster = load_cluster(cluster_path)
    if not cluster.secret_file:
        raise ClusterFileError("cluster file has no secret_file")
    secret = read_secret(cluster.secret_file)
    clients = [AgentClient(vm.host, vm.agent_port, secret, vm.name) for vm in cluster.vms]
    job = "calib-" + uuid.uuid4().hex[:12]

    def say(text: str) -> None:
        if progress:
            echo(text)

    try:
        for c in clients:
            c.ping()
        a, b = clients[0], clients[1 % len(clients)]
        say("latency ...")
        pings = []
        for _ in range(20):
            t0 = time.perf_counter()
            a.ping()
            pings.append(time.perf_counter() - t0)
        say("VM-to-VM bandwidth ...")

        def pull(size: int) -> float:
            return b.rawtcp_pull(size, cluster.vms[0].host, a.rawtcp_serve(size))

        net_bytes = long_enough(pull, net_bytes)
        bw = [net_bytes / pull(net_bytes) for _ in range(repeats)]
        say("disk ...")

        def disk_seconds(size: int) -> float:
            d = a.diskbench(size)
            return d.write_s + d.read_s

        disk_bytes = long_enough(disk_seconds, disk_bytes)
        disk = [a.diskbench(disk_bytes) for _ in range(repeats)]
        say("S3 latency and bandwidth ...")
        s3_small = [_s3_roundtrip(a, job, 1024, i) for i in range(5)]
        attempt = itertools.count(50)  # every round trip stores its own key
        s3_bytes = long_enough(lambda size: _s3_roundtrip(a, job, size, next(attempt)), s3_bytes)
        s3_big = [_s3_roundtrip(a, job, s3_bytes, 100 + i) for i in range(repeats)]
        with ThreadPoolExecutor(max_workers=len(clients)) as pool:
            t0 = time.perf_counter()
            list(pool.map(lambda ic: _s3_roundtrip(ic[1], job, s3_bytes, 200 + ic[0]), enumerate(clients)))
            aggregate_s = time.perf_counter() - t0
        say("invocation overhead, per-object overhead and cold start ...")
        overhead = invocation_overhead(a, 30)
        per_object = object_overhead_s(a)
        # A job pays more per instance than a bare round trip (sonic.runtime.dispatch_cycle).
        invoke_s = max(overhead["median_ms"] / 1000, dispatch_gap_s(cluster, secret) - per_object * TOUCH_OBJECTS)
        # What a direct pull costs per object beyond its bytes (request, file, checksum); a
        # ping round trip alone under-counts it by two orders of magnitude.
        direct_latency = (direct_object_latency_s(b, a, cluster.vms[0]) if len(clients) > 1
                          else statistics.median(pings) / 2)
        cold = statistics.median(a.coldstart("sonic.runtime.benchapp:noop") for _ in range(2))
        say("compute speed of every VM ...")
        factors = compute_factors(cluster, secret)
        latency_s3 = statistics.median(s3_small) / 2  # one round trip each way
        per_conn = s3_bytes / max(statistics.median(s3_big) - 2 * latency_s3, 1e-6) * 2
        calibration = Calibration(
            vm_bandwidth_Bps=statistics.median(bw),
            vm_latency_s=direct_latency,
            disk_write_Bps=disk_bytes / statistics.median(d.write_s for d in disk),
            disk_read_Bps=disk_bytes / statistics.median(d.read_s for d in disk),
            s3_latency_s=latency_s3,
            s3_conn_Bps=per_conn,
            s3_aggregate_Bps=max(per_conn, 2 * s3_bytes * len(clients) / aggregate_s),
            invoke_overhead_s=invoke_s,
            cold_start_s=cold,
            measured=True,
            object_overhead_s=per_object,
            compute_factor=factors,
        )
    finally:
        for c in clients:
            c.drop(job)
            c.close()
        RemoteStore(RemoteSettings.for_cluster(cluster)).delete_prefix(f"{job}/")
    cluster.calibration = calibration
    cluster.save(cluster_path)
    return asdict(calibration)


#: Largest transfer :func:`long_enough` grows a bandwidth measurement to.
MAX_MEASURED_BYTES = 512 * MB


def long_enough(measure: Callable[[int], float], size: int, *, cap: int = MAX_MEASURED_BYTES) -> int:
    """``size``, doubled until one ``measure(size)`` lasts :data:`MIN_SECONDS` (or reaches ``cap``).

    A VM under a CPU quota (``cpu.max``: a budget per 100 ms CFS period) moves a short transfer
    at full speed out of one period's budget and is throttled only over longer ones: an 8 MB
    S3 round trip measured 182 MB/s on half-core VMs whose 256 MB sort then moved its shuffle
    at a fraction of that (remote predicted 9.5 s, measured 56 s)."""
    while size < cap and measure(size) < MIN_SECONDS:
        size *= 2
    return min(size, cap)


def _s3_roundtrip(agent: AgentClient, job: str, size: int, n: int) -> float:
    """Upload then download ``size`` bytes through S3 from one agent; seconds for both."""
    with tempfile.TemporaryDirectory() as tmp:
        blob = Path(tmp) / "blob"
        write_blob(blob, size)
        checksum = file_checksum(blob)
        key = f"calib/{n}/blob"
        agent.put_file(job, key, blob, checksum)
    up = agent.push(job, key)
    agent.drop(job)
    item = {"stage": "calib", "instance": n, "name": "blob", "size": size, "checksum": checksum, "method": "remote"}
    down = agent.fetch(job, item, timeout=None).seconds
    return up + down
