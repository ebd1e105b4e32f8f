"""``python -m experiments.s3_servers``: which S3-compatible server to embed, by measurement.

Candidates, all on loopback, all running at once, measured in interleaved rounds:

- ``sonic``:  sonic.emulation.s3server (aiohttp, objects on disk, SigV4 checked);
- ``moto``:   moto's own server (``python -m moto.server``), what sonic embedded before
              (its server mode keeps objects in RAM; needs ``pip install 'moto[server]'``);
- ``s3rver``: the npm package s3rver (Koa, objects on disk; needs node and
              ``npm install --prefix DIR s3rver``, DIR given with ``--s3rver-dir``);
- ``file``:   the yardstick: the same threads copying the same bytes between local files.

Per round and server: aggregate put and get MB/s of ``--clients`` concurrent boto3 clients
(``sonic.runtime.s3load``). After the rounds: each server's resident memory (VmRSS) before
and after storing ``--store-mb`` more, and its peak (VmHWM). Writes
``experiments/results/s3_servers.csv`` (one row per round and server) and prints a summary
with medians and min-max.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from sonic.emulation.procs import backoff, spawn, stop_pid, tail
from sonic.emulation.s3server import EMBEDDED_S3_CREDENTIALS
from sonic.runtime.bench import write_blob
from sonic.runtime.s3load import S3Target, Throughput, file_aggregate, s3_aggregate

RESULTS = Path(__file__).parent / "results" / "s3_servers.csv"
BUCKET = "bench"
READY_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    for _ in backoff(time.monotonic() + READY_TIMEOUT_S):
        if proc.poll() is not None:
            raise RuntimeError(f"server exited at start: {tail(log)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            continue
    raise RuntimeError(f"server on port {port} did not listen within {READY_TIMEOUT_S:g}s: {tail(log)}")


def memory_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used (children excluded)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def sonic_server(work: Path) -> Iterator[tuple[S3Target, int]]:
    ready = work / "sonic-ready.json"
    log = work / "sonic.log"
    proc = spawn([sys.executable, "-m", "sonic.emulation.s3server", "--port", "0", "--bucket", BUCKET,
                  "--data-dir", str(work / "sonic-data"), "--ready-file", str(ready)], log=log)
    try:
        for _ in backoff(time.monotonic() + READY_TIMEOUT_S):
            if ready.exists():
                break
            if proc.poll() is not None:
                raise RuntimeError(f"sonic s3server exited: {tail(log)}")
        doc = json.loads(ready.read_text())
        yield S3Target(doc["endpoint_url"], BUCKET, EMBEDDED_S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                       EMBEDDED_S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]), proc.pid
    finally:
        stop_pid(proc.pid, str(work))


@contextmanager
def moto_server(work: Path) -> Iterator[tuple[S3Target, int]]:
    port = _free_port()
    log = work / "moto.log"
    # stop_pid only stops a PID whose command line shows the marker: here, the port.
    proc = spawn([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], log=log, cwd=work)
    try:
        _wait_listening(port, proc, log)
        target = S3Target(f"http://127.0.0.1:{port}", BUCKET, "testing", "testing")
        target.client().create_bucket(Bucket=BUCKET)
        yield target, proc.pid
    finally:
        stop_pid(proc.pid, str(port))


@contextmanager
def s3rver_server(work: Path, s3rver_dir: Path) -> Iterator[tuple[S3Target, int]]:
    port = _free_port()
    log = work / "s3rver.log"
    data = work / "s3rver-data"
    data.mkdir()
    binary = s3rver_dir / "node_modules" / ".bin" / "s3rver"
    proc = spawn([str(binary), "-d", str(data), "-a", "127.0.0.1", "-p", str(port), "--silent",
                  "--configure-bucket", BUCKET], log=log)
    try:
        _wait_listening(port, proc, log)
        # s3rver checks signatures against its fixed key pair.
        yield S3Target(f"http://127.0.0.1:{port}", BUCKET, "S3RVER", "S3RVER"), proc.pid
    finally:
        stop_pid(proc.pid, str(work))


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):7.0f} ({min(values):.0f}-{max(values):.0f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.s3_servers", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--object-mb", type=int, default=16)
    parser.add_argument("--objects-per-client", type=int, default=2)
    parser.add_argument("--small-kb", type=int, default=64, help="object size of the small-object phase")
    parser.add_argument("--small-per-client", type=int, default=100, help="objects per client, small-object phase")
    parser.add_argument("--store-mb", type=int, default=256, help="volume stored before the memory reading")
    parser.add_argument("--store-object-kb", type=int, default=1024,
                        help="object size of the stored volume (shuffles make many small objects)")
    parser.add_argument("--servers", default="sonic,moto,s3rver,file")
    parser.add_argument("--s3rver-dir", type=Path, default=Path(tempfile.gettempdir()) / "sonic-s3rver")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    wanted = args.servers.split(",")
    missing = {"moto": "moto is not installed (pip install 'moto[server]')"
               if importlib.util.find_spec("moto") is None else None,
               "s3rver": f"no s3rver under {args.s3rver_dir} (npm install --prefix {args.s3rver_dir} s3rver)"
               if not (args.s3rver_dir / "node_modules" / ".bin" / "s3rver").exists() else None}
    for name, why in missing.items():
        if why and name in wanted:
            print(f"skipping {name}: {why}", file=sys.stderr)
            wanted.remove(name)
    work = Path(tempfile.mkdtemp(prefix="sonic-s3cmp-"))
    rows: list[dict[str, object]] = []
    try:
        source = work / "object.bin"
        write_blob(source, args.object_mb * 1024 * 1024)
        small = work / "small.bin"
        write_blob(small, args.store_object_kb * 1024)
        tiny = work / "tiny.bin"
        write_blob(tiny, args.small_kb * 1024)
        scratch = work / "scratch"
        scratch.mkdir()
        with ExitStack() as stack:
            servers: dict[str, tuple[S3Target, int]] = {}
            if "sonic" in wanted:
                servers["sonic"] = stack.enter_context(sonic_server(work))
            if "moto" in wanted:
                servers["moto"] = stack.enter_context(moto_server(work))
            if "s3rver" in wanted:
                servers["s3rver"] = stack.enter_context(s3rver_server(work, args.s3rver_dir))
            phases = [("large", source, args.objects_per_client), ("small", tiny, args.small_per_client)]
            for round_no in range(args.rounds):
                for (phase, body, per_client), name in [(ph, n) for ph in phases
                                                        for n in [*servers, *(["file"] if "file" in wanted else [])]]:
                    t0 = time.perf_counter()
                    cpu0 = cpu_seconds(servers[name][1]) if name in servers else 0.0
                    own0 = os.times()
                    if name == "file":
                        got: Throughput = file_aggregate(body, scratch, clients=args.clients,
                                                         objects_per_client=per_client)
                    else:
                        got = s3_aggregate(servers[name][0], body, scratch, clients=args.clients,
                                           objects_per_client=per_client)
                    own1 = os.times()
                    client_cpu = (own1.user - own0.user) + (own1.system - own0.system)
                    size = body.stat().st_size
                    row: dict[str, object] = {"round": round_no, "phase": phase, "server": name,
                                              "clients": args.clients, "object_bytes": size, "total_bytes": got.total_bytes,
                                              "put_MBps": round(got.put_MBps, 1), "get_MBps": round(got.get_MBps, 1),
                                              "put_per_s": round(got.put_MBps * 1e6 / size, 1),
                                              "get_per_s": round(got.get_MBps * 1e6 / size, 1),
                                              "seconds": round(time.perf_counter() - t0, 2),
                                              # The clients' CPU (this process) per GB moved.
                                              "client_cpu_s_per_GB": round(client_cpu / (2 * got.total_bytes / 1e9), 2)}
                    if name in servers:
                        # Server CPU per GB moved (put + get): what "not the bottleneck" costs.
                        row["server_cpu_s_per_GB"] = round(
                            (cpu_seconds(servers[name][1]) - cpu0) / (2 * got.total_bytes / 1e9), 2)
                        row["rss_MB_after_round"] = round(memory_kb(servers[name][1])["VmRSS"] / 1024, 1)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
            for name, (target, pid) in servers.items():
                before = memory_kb(pid)["VmRSS"]
                client = target.client()
                stored = 0
                n = 0
                while stored < args.store_mb * 1024 * 1024:
                    with open(small, "rb") as body:
                        client.put_object(Bucket=BUCKET, Key=f"stored/{n}", Body=body)
                    stored += small.stat().st_size
                    n += 1
                after = memory_kb(pid)
                row = {"round": "store", "phase": "store", "server": name, "total_bytes": stored, "object_bytes": small.stat().st_size,
                       "rss_MB_before_store": round(before / 1024, 1), "rss_MB_after_store": round(after["VmRSS"] / 1024, 1),
                       "peak_rss_MB": round(after["VmHWM"] / 1024, 1)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fields = sorted({k for row in rows for k in row}, key=lambda k: list(rows[0]).index(k) if k in rows[0] else 99)
    with open(args.out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    print(f"\n{args.clients} concurrent clients, {args.object_mb} MB objects, median (min-max) of {args.rounds} "
          "interleaved rounds, MB/s aggregate")
    small_rows = [r for r in rows if r.get("phase") == "small"]
    print(f"{'server':8} {'put':>20} {'get':>20} {'server CPU s/GB':>15} {'client CPU s/GB':>15} "
          f"{'RSS after storing':>22}")
    for name in dict.fromkeys(str(r["server"]) for r in rows):
        mine = [r for r in rows if r["server"] == name and r.get("phase") == "large"]
        store = next((r for r in rows if r["server"] == name and r["round"] == "store"), None)
        rss = f"{store['rss_MB_before_store']}->{store['rss_MB_after_store']} MB" if store else "-"
        cpu = [float(r["server_cpu_s_per_GB"]) for r in mine if "server_cpu_s_per_GB" in r]
        print(f"{name:8} {_summary([float(r['put_MBps']) for r in mine]):>20} "
              f"{_summary([float(r['get_MBps']) for r in mine]):>20} "
              f"{statistics.median(cpu) if cpu else float('nan'):15.2f} "
              f"{statistics.median(float(r['client_cpu_s_per_GB']) for r in mine):15.2f} {rss:>22}")
    print(f"\n{args.clients} concurrent clients, {args.small_kb} KB objects, {args.small_per_client} each, "
          "requests/s aggregate")
    print(f"{'server':8} {'put/s':>20} {'get/s':>20} {'server CPU ms/req':>18} {'client CPU ms/req':>18}")
    for name in dict.fromkeys(str(r["server"]) for r in small_rows):
        mine = [r for r in small_rows if r["server"] == name]
        per_req = 1e9 / (args.small_kb * 1024)                        # requests per GB moved
        cpu = [float(r["server_cpu_s_per_GB"]) * 1000 / per_req for r in mine if "server_cpu_s_per_GB" in r]
        own = [float(r["client_cpu_s_per_GB"]) * 1000 / per_req for r in mine]
        print(f"{name:8} {_summary([float(r['put_per_s']) for r in mine]):>20} "
              f"{_summary([float(r['get_per_s']) for r in mine]):>20} "
              f"{statistics.median(cpu) if cpu else float('nan'):18.2f} {statistics.median(own):18.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
