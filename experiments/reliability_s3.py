"""``sort`` through Remote-Storage while the emulated S3 fails a fraction of all requests.

    python -m experiments.reliability_s3 --runs 10 [--fail-rate 0.1] [--size 32MB]

One local cluster whose embedded S3 server answers ``--fail-rate`` of all requests with
``503 SlowDown`` (its fault-injecting middleware). Each of ``--runs`` iterations runs ``sort``
with every edge on Remote-Storage twice: once with faults switched off (the server's runtime
control endpoint) and once with them on. Prints how many faulty runs completed with output
the validator accepts (target: all), how many 503s were injected, and the median latencies;
writes one CSV row per run to ``experiments/results/reliability_s3.csv``.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from sonic.app import load_app
from sonic.emulation.local import HarnessOptions, local_cluster
from sonic.cluster.spec import ClusterSpec
from sonic.errors import SonicError
from sonic.inputs import generate_input
from sonic.plan import PassingMethod, fixed_plan
from sonic.runtime.coordinator import Coordinator
from sonic.runtime.protocol import read_secret
from sonic.sizes import parse_size

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    run: int
    baseline_s: float
    baseline_ok: bool
    fault_s: float
    fault_ok: bool
    requests: int
    injected_503: int
    error: str = ""


def control(spec: ClusterSpec, what: str, body: dict[str, float] | None = None) -> dict[str, float]:
    request = urllib.request.Request(f"{spec.remote_storage.endpoint_url}/_sonic/{what}",
                                     data=json.dumps(body).encode() if body is not None else None,
                                     method="PUT" if body is not None else "GET")
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.loads(response.read()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.reliability_s3", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--fail-rate", type=float, default=0.1)
    parser.add_argument("--size", default="32MB")
    parser.add_argument("--vms", type=int, default=3)
    parser.add_argument("--csv", type=Path, default=RESULTS / "reliability_s3.csv")
    args = parser.parse_args(argv)

    app = load_app("sort")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="sonic-reliability-s3-") as tmp:
        root = Path(tmp)
        input_path = generate_input(app, root / "sort.in", parse_size(args.size), seed=5)
        options = HarnessOptions(ssh_config_path=None, s3_fail_rate=args.fail_rate)
        with local_cluster(args.vms, "loopback", root / "cluster", options=options) as spec:
            assert spec.secret_file
            coordinator = Coordinator(spec, read_secret(spec.secret_file))
            plan = fixed_plan(app, PassingMethod.REMOTE, spec.vm_names)
            try:
                for i in range(args.runs):
                    row = Row(i, 0.0, False, 0.0, False, 0, 0)
                    control(spec, "faults", {"fail_rate": 0.0})
                    result = coordinator.execute(app, "sort", input_path, plan)
                    row.baseline_s, row.baseline_ok = result.latency_s, result.output_ok
                    control(spec, "faults", {"fail_rate": args.fail_rate})
                    before = control(spec, "stats")
                    try:
                        result = coordinator.execute(app, "sort", input_path, plan)
                        row.fault_s, row.fault_ok = result.latency_s, result.output_ok
                    except SonicError as exc:
                        row.error = str(exc)
                    after = control(spec, "stats")
                    row.requests = int(after["requests"] - before["requests"])
                    row.injected_503 = int(after["failed"] - before["failed"])
                    rows.append(row)
                    print(f"run {i + 1:2d}/{args.runs}: fault-free {row.baseline_s:6.2f} s, with faults "
                          f"{row.fault_s:6.2f} s ({'ok' if row.fault_ok else 'FAILED ' + row.error}), "
                          f"{row.injected_503}/{row.requests} requests got 503", file=sys.stderr, flush=True)
            finally:
                coordinator.close()

    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with open(args.csv, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    completed = sum(1 for r in rows if r.fault_ok)
    base = statistics.median(r.baseline_s for r in rows)
    faulty = [r.fault_s for r in rows if r.fault_ok]
    injected, requests = sum(r.injected_503 for r in rows), sum(r.requests for r in rows)
    print(f"sort {args.size}, all edges remote, {args.vms} VMs (loopback), {args.runs} runs, "
          f"S3 fail rate {args.fail_rate:g}")
    print(f"completed with validated output: {completed}/{args.runs}")
    print(f"injected 503 SlowDown:           {injected}/{requests} requests ({injected / max(requests, 1):.1%})")
    print(f"median latency fault-free:       {base:.3f} s")
    if faulty:
        print(f"median latency with faults:      {statistics.median(faulty):.3f} s "
              f"({statistics.median(faulty) / base:.2f}x)")
    print(f"rows: {args.csv}")
    return 0 if completed == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
