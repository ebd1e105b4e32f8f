"""Prediction latency of the parameter models: all stages of an app, one input.

    python -m experiments.bench_models [--root .sonic] [--apps sort,video,lightgbm] [--calls 2000]

For every app with saved models under ``--root`` (``sonic profile APP``) it times
``AppModel.predict(app, size)`` for sizes spread over 1-256 MB; an app without models is
benchmarked on a simulated profile of the same shape (built-in synthetic ``chain`` too).
Prints median and p99 per app; the target is a median <= 5 ms.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from models import AppModel
from models.persist import ModelsNotFoundError
from profiler.synthetic import CHAIN, chain_behaviour, simulate_profile
from sonic.app import App, load_app
from sonic.errors import SonicError

MB = 1_000_000
TARGET_MS = 5.0


def _model_for(name: str, root: Path) -> tuple[App, AppModel, str]:
    if name == "chain":
        app = CHAIN
        return app, AppModel("chain").fit(simulate_profile(app, chain_behaviour(), [2 * MB * 2**i for i in range(5)], 3)), "simulated"
    app = load_app(name)
    try:
        return app, AppModel.load(app.name, root), f"saved under {root}"
    except ModelsNotFoundError:
        return app, AppModel(app.name).fit(_simulated(app)), "simulated profile (no saved models)"


def _simulated(app: App):  # type: ignore[no-untyped-def]
    """A profile of ``app``'s DAG with generic stage behaviour: same number of models."""
    from profiler.synthetic import Behaviour

    generic = Behaviour(time=lambda x, a, f: 0.01 + 1e-8 * x, memory=lambda x, a, f: 100 + x / 2**20,
                        output=lambda x, a, f: x / 2, fanout=lambda a, f: max(1, int(a // (4 * MB))))
    return simulate_profile(app, {s: generic for s in app.stages}, [4 * MB * 2**i for i in range(5)], 2)


def bench(app: App, model: AppModel, calls: int) -> tuple[float, float]:
    sizes = [int(MB * (1 + (i * 37) % 256)) for i in range(calls)]
    for size in sizes[:50]:  # warm-up: caches, first-call allocations
        model.predict(app, size)
    samples = []
    for size in sizes:
        t0 = time.perf_counter()
        model.predict(app, size)
        samples.append(time.perf_counter() - t0)
    samples.sort()
    return statistics.median(samples) * 1e3, samples[int(0.99 * (len(samples) - 1))] * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path(".sonic"))
    parser.add_argument("--apps", default="chain,sort,video,lightgbm")
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args(argv)
    worst = 0.0
    print(f"{'app':<10} {'stages':>6} {'median ms':>10} {'p99 ms':>8}  models")
    for name in [a for a in args.apps.split(",") if a]:
        try:
            app, model, origin = _model_for(name, args.root)
        except SonicError as exc:
            print(f"{name:<10} skipped: {exc}")
            continue
        median, p99 = bench(app, model, args.calls)
        worst = max(worst, median)
        print(f"{name:<10} {len(app.stages):>6} {median:>10.3f} {p99:>8.3f}  {origin}")
    verdict = "OK" if worst <= TARGET_MS else "TOO SLOW"
    print(f"worst median {worst:.3f} ms (target <= {TARGET_MS} ms): {verdict}")
    return 0 if worst <= TARGET_MS else 1


if __name__ == "__main__":
    raise SystemExit(main())
