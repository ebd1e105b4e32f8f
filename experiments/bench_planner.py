"""Planning time of the optimiser: the three sample DAGs and a 100-stage, 1000-instance DAG.

    python -m experiments.bench_planner [--repeat 7] [--objectives latency,cost,perf-per-dollar] [--json]

Cases (synthetic stand-ins from `tests/planner/planner_samples.py`, so no workload code is needed):
``video`` (split -scatter-> extract -one-to-one-> classify -gather-> summarise, 19 chunks),
``lightgbm`` (pca -scatter-> train -gather-> combine, 8 models) and ``sort`` (split -scatter->
map -scatter-> reduce, 8 x 8 shuffle) on 4 VMs with 2 cores; ``wide`` (25 fork-join blocks:
100 stages, 1000 instances, joins and branches) on 64 VMs with 2 cores. Each case is planned
``--repeat`` times per objective (after one warm-up); the median wall time of
``make_plan`` (build the problem, DP, assemble the plan) is reported against the targets:
<= 50 ms for the sample apps, <= 1000 ms for the large DAG. Exit code 1 if a median misses.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from sonic.app import App
from sonic.cluster.spec import ClusterSpec
from sonic.planner import make_plan
from tests.planner.planner_samples import cluster, lightgbm, sort, video, wide
from sonic.prediction import AppPrediction

OBJECTIVES = ("latency", "cost", "perf-per-dollar")


@dataclass
class Case:
    name: str
    build: Callable[[], tuple[App, AppPrediction]]
    vms: int
    target_ms: float


CASES = (
    Case("video", video, 4, 50.0),
    Case("lightgbm", lightgbm, 4, 50.0),
    Case("sort", sort, 4, 50.0),
    Case("wide", wide, 64, 1000.0),
)


@dataclass
class Result:
    case: str
    objective: str
    stages: int
    instances: int
    vms: int
    median_ms: float
    min_ms: float
    target_ms: float
    ok: bool
    latency_s: float
    cost_usd: float
    methods: dict[str, int]


def bench(case: Case, objective: str, repeat: int) -> Result:
    app, pred = case.build()
    spec: ClusterSpec = cluster(case.vms)
    plan = make_plan(app, pred, spec, objective=objective)   # warm-up (imports, first allocations)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        plan = make_plan(app, pred, spec, objective=objective)
        times.append((time.perf_counter() - t0) * 1e3)
    methods: dict[str, int] = {}
    for e in plan.edges:
        methods[e.method.value] = methods.get(e.method.value, 0) + 1
    median = statistics.median(times)
    return Result(case.name, objective, len(pred.stages), sum(s.instances for s in plan.stages.values()),
                  case.vms, round(median, 3), round(min(times), 3), case.target_ms, median <= case.target_ms,
                  plan.predicted["latency_s"], plan.predicted["cost_usd"], methods)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per case and objective")
    parser.add_argument("--objectives", default=",".join(OBJECTIVES))
    parser.add_argument("--cases", default=",".join(c.name for c in CASES))
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    objectives = [o for o in args.objectives.split(",") if o]
    wanted = [c for c in CASES if c.name in args.cases.split(",")]
    results = [bench(case, objective, max(1, args.repeat)) for case in wanted for objective in objectives]
    ok = all(r.ok for r in results)
    if args.json:
        print(json.dumps({"results": [asdict(r) for r in results], "ok": ok}, indent=2))
    else:
        print(f"{'case':<9} {'objective':<16} {'stages':>6} {'inst':>5} {'vms':>4} {'median ms':>10} "
              f"{'min ms':>8} {'target':>7}  verdict  methods")
        for r in results:
            methods = " ".join(f"{m}:{n}" for m, n in sorted(r.methods.items()))
            print(f"{r.case:<9} {r.objective:<16} {r.stages:>6} {r.instances:>5} {r.vms:>4} {r.median_ms:>10.2f} "
                  f"{r.min_ms:>8.2f} {r.target_ms:>7.0f}  {'ok' if r.ok else 'SLOW':<7}  {methods}")
        print("all within target" if ok else "some medians miss their target")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
