"""How noisy is this machine's CPU? Time a fixed pure-Python loop many times and print the
spread (min, median, p90, p98, max): the floor of run-to-run noise any experiment here sees.

    python experiments/scripts/cpu_jitter.py [REPETITIONS]      # default 300 (~5 s)
"""

import statistics
import sys
import time


def loop_seconds(n: int = 200_000) -> float:
    t0 = time.perf_counter()
    total = 0
    for k in range(n):
        total += k
    return time.perf_counter() - t0


def main() -> None:
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    times = sorted(loop_seconds() for _ in range(reps))
    med = statistics.median(times)

    def q(p: float) -> float:
        return times[min(len(times) - 1, int(p * len(times)))]

    print(f"{reps} runs of a fixed loop: min {times[0] * 1e3:.1f} ms, median {med * 1e3:.1f} ms, "
          f"p90 {q(0.9) / med - 1:+.0%}, p98 {q(0.98) / med - 1:+.0%}, max {times[-1] / med - 1:+.0%} vs the median")


if __name__ == "__main__":
    main()
