"""``python -m experiments run [--quick] [--only NAME[,NAME]]``: reproduce the evaluation.

Experiments (in this order; each writes CSV under ``experiments/results/`` and PNG under
``experiments/figures/``; ``experiments/report.md`` is regenerated at the end from whatever
results exist):

- ``fanout``      fanout crossover of one broadcast edge at three VM bandwidths (netns)
- ``end_to_end``  profile + fit models, then 3 apps x 3 sizes x 5 strategies (netns)
- ``prediction``  model error vs profiling runs; predicted vs measured latency (no cluster)
- ``scale``       concurrent mixed jobs per strategy (netns)
- ``peer``        sort through Lithops localhost, Sonic (live plan, vm, direct) on a loopback cluster and
                  one numpy process, interleaved rounds (SONIC_PEER_SIZES, SONIC_PEER_ROUNDS; needs
                  ``pip install -e '.[experiments]'`` for Lithops)
- ``adaptivity``  per app (built-ins + examples) x 2 sizes: fresh store, profile, then 30 rounds of
                  sonic/remote/vm/direct (order rotated) through ``sonic run`` with learning on (netns)
- ``scale_end_to_end``  sort at 256 MB and 1 GB on 4 netns VMs in 0.5-CPU cgroups: the five
                  strategies, 3 interleaved rounds, and the numpy floor of the same inputs

``--quick`` runs a reduced grid (about 10-15 minutes on a 2-core machine); ``report``
only regenerates report.md from existing results. netns clusters need root; without it the
experiments fall back to loopback clusters and the report says so.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from experiments import common
from sonic.errors import UserInputError

EXPERIMENTS = ("fanout", "end_to_end", "prediction", "scale", "peer", "adaptivity", "scale_end_to_end")


def _runner(name: str) -> Callable[..., dict[str, Any]]:
    import importlib

    return importlib.import_module(f"experiments.{name}").run  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="run experiments, then regenerate report.md")
    run_p.add_argument("--quick", action="store_true", help="reduced grid (< 15 minutes)")
    run_p.add_argument("--only", default="", help=f"comma-separated subset of {', '.join(EXPERIMENTS)}")
    run_p.add_argument("--keep-going", action="store_true", help="continue with the next experiment after a failure")
    run_p.add_argument("--out", default=None, help="write results/, figures/, report.md and state under this "
                                                   "directory instead of experiments/")
    report_p = sub.add_parser("report", help="regenerate report.md from existing results")
    report_p.add_argument("--out", default=None, help="the directory a `run --out` wrote to")
    args = parser.parse_args(argv)
    if args.out:
        from pathlib import Path

        common.set_output(Path(args.out).resolve())

    from experiments import report

    if args.command == "report":
        path = report.write()
        print(path)
        return 0
    chosen = [n.strip() for n in args.only.split(",") if n.strip()] or list(EXPERIMENTS)
    unknown = [n for n in chosen if n not in EXPERIMENTS]
    if unknown:
        parser.error(f"unknown experiment(s) {', '.join(unknown)}; choose from {', '.join(EXPERIMENTS)}")
    failures = []
    timings: dict[str, float] = {}
    for name in [n for n in EXPERIMENTS if n in chosen]:
        common.log(f"=== {name} ({'quick' if args.quick else 'full'}) ===")
        t0 = time.perf_counter()
        try:
            _runner(name)(quick=args.quick)
        except KeyboardInterrupt:
            common.log("interrupted; clusters were torn down by their context managers")
            return 130
        except UserInputError as exc:  # a setting or a missing optional package: one line, exit code 2
            print(f"error: {name}: {exc}", file=sys.stderr)
            return 2
        except Exception as exc:  # noqa: BLE001 - report and (optionally) go on with the next experiment
            traceback.print_exc()
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
            if not args.keep_going:
                break
        finally:
            timings[name] = time.perf_counter() - t0
            common.log(f"=== {name} took {timings[name] / 60:.1f} min ===")
    report.record_timings(timings, quick=args.quick)
    path = report.write()
    common.log(f"report: {path}")
    if failures:
        print("failed: " + "; ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
