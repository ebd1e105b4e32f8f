"""kill -9 an agent mid-stage, N times: does the job always complete, and how much slower is it?

    python -m experiments.reliability_kill --runs 20 [--size 32MB] [--method direct] [--mode loopback]

Every run gets a fresh local cluster of ``--vms`` VMs and makes two paired runs of ``sort`` on
the same input with the same fixed plan: a fault-free one and one where the agent of the VM
that finished the first ``map`` instance is killed (SIGKILL, by its PID from the cluster
file) the moment the coordinator hears of it. The runtime must notice, re-queue that VM's
running instances, regenerate the objects that lived only there (lineage) and finish with
output the workload validator accepts. The fault-free run goes first (afterwards the cluster
has lost a VM); both run with warm workers (the coordinator warms them before the clock).

Prints: completed runs with validated output, median fault-free and median with-kill latency
and their ratio (target <= 2x), the median time from the kill to the VM being declared lost,
and how many instances were re-executed; writes one CSV row per run to
``experiments/results/reliability_kill.csv``.
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from sonic.app import load_app
from sonic.emulation.local import HarnessOptions, local_cluster
from sonic.emulation.procs import backoff, pid_alive
from sonic.cluster.spec import ClusterSpec
from sonic.errors import SonicError
from sonic.inputs import generate_input
from sonic.plan import PassingMethod, fixed_plan
from sonic.runtime.coordinator import Coordinator, EventObserver
from sonic.runtime.protocol import read_secret
from sonic.runtime.scheduler import Event, InstanceFinished, VMLost
from sonic.sizes import parse_size

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_RATIO = 2.0
EXIT_DEADLINE_S = 15.0


@dataclass
class Row:
    run: int
    baseline_s: float
    baseline_ok: bool
    fault_s: float
    fault_ok: bool
    victim: str
    detect_s: float          # kill -> VMLost seen by the coordinator
    reexecuted: int          # instance executions beyond one per instance
    error: str = ""
    leftover_pids: int = 0


def _coordinator(spec: ClusterSpec, observer: EventObserver | None = None) -> Coordinator:
    assert spec.secret_file
    return Coordinator(spec, read_secret(spec.secret_file), observer=observer)


def _workers(spec: ClusterSpec, coordinator: Coordinator) -> list[int]:
    pids: list[int] = []
    for name, agent in coordinator.agents.items():
        assert spec.local is not None
        if pid_alive(spec.local.pids[f"agent-{name}"]):
            pids += list(agent.client.call("ping").get("workers", []))
    return pids


def one_run(i: int, input_path: Path, args: argparse.Namespace, root: Path) -> Row:
    app = load_app("sort")
    method = PassingMethod(args.method)
    row = Row(i, 0.0, False, 0.0, False, "", 0.0, 0)
    seen_pids: list[int] = []
    with local_cluster(args.vms, args.mode, root / f"run-{i}", options=HarnessOptions(ssh_config_path=None)) as spec:
        assert spec.local is not None
        plan = fixed_plan(app, method, spec.vm_names)
        kill_at: list[float] = []

        def observer(event: Event) -> None:
            if not kill_at and isinstance(event, InstanceFinished) and event.stage == "map":
                row.victim = event.vm
                seen_pids.extend(_workers(spec, fault))
                kill_at.append(time.perf_counter())
                os.kill(spec.local.pids[f"agent-{event.vm}"], signal.SIGKILL)  # type: ignore[union-attr]
            if isinstance(event, VMLost) and kill_at and not row.detect_s:
                row.detect_s = time.perf_counter() - kill_at[0]

        baseline = _coordinator(spec)
        fault = _coordinator(spec, observer)
        try:
            for which in ("baseline", "fault"):
                if which == "baseline":
                    result = baseline.execute(app, "sort", input_path, plan)
                    row.baseline_s, row.baseline_ok = result.latency_s, result.output_ok
                else:
                    try:
                        result = fault.execute(app, "sort", input_path, plan)
                    except SonicError as exc:
                        row.error = str(exc)
                        continue
                    row.fault_s, row.fault_ok = result.latency_s, result.output_ok
                    n_instances = sum(s.instances for s in result.stages)
                    row.reexecuted = len(result.instances) - n_instances
            seen_pids.extend(_workers(spec, baseline))
        finally:
            baseline.close()
            fault.close()
        seen_pids.extend(spec.local.pids.values())
    for _ in backoff(time.monotonic() + EXIT_DEADLINE_S):
        if not any(pid_alive(p) for p in seen_pids):
            break
    row.leftover_pids = sum(1 for p in seen_pids if pid_alive(p))
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.reliability_kill", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--size", default="32MB", help="sort input size (default 32MB: 8 mappers x 8 reducers)")
    parser.add_argument("--method", choices=[m.value for m in PassingMethod], default="direct")
    parser.add_argument("--vms", type=int, default=3)
    parser.add_argument("--mode", choices=["loopback", "netns"], default="loopback")
    parser.add_argument("--csv", type=Path, default=RESULTS / "reliability_kill.csv")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="sonic-reliability-") as tmp:
        root = Path(tmp)
        input_path = generate_input(load_app("sort"), root / "sort.in", parse_size(args.size), seed=3)
        rows: list[Row] = []
        for i in range(args.runs):
            row = one_run(i, input_path, args, root)
            rows.append(row)
            status = "ok" if row.fault_ok else f"FAILED {row.error}"
            print(f"run {i + 1:2d}/{args.runs}: fault-free {row.baseline_s:6.2f} s, kill {row.victim} -> "
                  f"{row.fault_s:6.2f} s ({status}), detected in {row.detect_s:.3f} s, "
                  f"{row.reexecuted} re-executions, {row.leftover_pids} processes left", file=sys.stderr, flush=True)

    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with open(args.csv, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)

    completed = sum(1 for r in rows if r.fault_ok)
    base = statistics.median(r.baseline_s for r in rows if r.baseline_ok)
    faulty = [r.fault_s for r in rows if r.fault_ok]
    ratio = statistics.median(faulty) / base if faulty else float("inf")
    print(f"sort {args.size}, {args.method} plan, {args.vms} VMs ({args.mode}), {args.runs} runs")
    print(f"completed with validated output: {completed}/{args.runs}")
    print(f"median latency fault-free:       {base:.3f} s")
    if faulty:
        print(f"median latency with kill -9:     {statistics.median(faulty):.3f} s  (p90 "
              f"{sorted(faulty)[int(0.9 * (len(faulty) - 1))]:.3f} s)")
    print(f"ratio (median kill / fault-free): {ratio:.2f}x  (target <= {TARGET_RATIO:g}x)")
    print(f"median kill -> VM declared lost:  {statistics.median(r.detect_s for r in rows) * 1e3:.1f} ms")
    print(f"median re-executed instances:     {statistics.median(r.reexecuted for r in rows):g}")
    print(f"processes left running:           {sum(r.leftover_pids for r in rows)}")
    print(f"rows: {args.csv}")
    ok = completed == args.runs and ratio <= TARGET_RATIO and not any(r.leftover_pids for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
