"""``python -m experiments.memory_scale``: peak memory of the coordinator, the agents and the
embedded S3 server as the sort input grows (issue on scale, item 3).

For each size, a fresh loopback cluster of 2 VMs (so every peak belongs to that size alone),
then ``sonic run sort --strategy S`` on a generated input: the coordinator's peak RSS is the
``sonic run`` process's (``getrusage`` of the child), the agents' and the S3 server's are their
``VmHWM`` after the run, the instances' the run report's per-stage peaks. Writes
``experiments/results/memory_scale.csv`` and prints each peak relative to the smallest size.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from sonic.emulation.local import HarnessOptions, local_cluster
from sonic.sizes import parse_size_list

RESULTS = Path(__file__).parent / "results" / "memory_scale.csv"


def peak_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for pid {pid}")


def run_sort(cluster_file: Path, input_path: Path, strategy: str, root: Path) -> tuple[dict[str, Any], float, float]:
    """(run report, wall seconds, peak RSS MB of the ``sonic run`` process)."""
    out, err = root.parent / "run.out", root.parent / "run.err"
    t0 = time.perf_counter()
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "sonic.cli", "run", "sort", "--input", str(input_path),
                                 "--strategy", strategy, "--no-learn", "--root", str(root),
                                 "--cluster", str(cluster_file), "--json"], stdout=stdout, stderr=stderr)
        # wait4 gives this child's own rusage: its peak RSS, not the largest of all children.
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"sonic run failed ({proc.returncode}): {err.read_text()[-2000:]}")
    return dict(json.loads(out.read_text())), wall, usage.ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.memory_scale", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="256MB,1GB,2GB")
    parser.add_argument("--strategy", default="vm", choices=["vm", "direct", "remote", "sonic"])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sonic-memscale-") as tmp:
        work = Path(tmp)
        for size in sorted(parse_size_list(args.sizes)):
            input_path = work / f"sort-{size}.bin"
            subprocess.run([sys.executable, "-m", "sonic.cli", "workloads", "gen", "sort", "--size", str(size),
                            "-o", str(input_path)], check=True, capture_output=True, timeout=1800)
            root = work / f"cluster-{size}"
            with local_cluster(2, "loopback", root, options=HarnessOptions(ssh_config_path=None)) as spec:
                assert spec.local is not None
                report, wall, coordinator_mb = run_sort(root / "cluster.yaml", input_path, args.strategy, work / "home")
                pids = dict(yaml.safe_load((root / "cluster.yaml").read_text())["local"]["pids"])
                agents = {name: peak_kb(pid) / 1024 for name, pid in pids.items() if name.startswith("agent-")}
                row = {
                    "input_bytes": size, "strategy": args.strategy, "latency_s": round(float(report["latency_s"]), 2),
                    "wall_s": round(wall, 2), "output_ok": report["output_ok"],
                    "coordinator_peak_MB": round(coordinator_mb, 1),
                    "agent_peak_MB": round(max(agents.values()), 1),
                    "s3_server_peak_MB": round(peak_kb(pids["s3"]) / 1024, 1),
                    "instance_peak_MB": round(max(float(s["peak_memory_mb"]) for s in report["stages"]), 1),
                }
            input_path.unlink()
            rows.append(row)
            print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    base = rows[0]
    for row in rows:
        ratios = ", ".join(f"{k[:-8]} {row[k] / base[k]:.2f}x" for k in row if k.endswith("_peak_MB"))
        print(f"{row['input_bytes'] / 1e9:5.2f} GB: {ratios} of the {base['input_bytes'] / 1e9:.2f} GB peaks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
