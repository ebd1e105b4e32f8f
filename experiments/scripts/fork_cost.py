"""Cost of a forked child with and without freezing the parent's objects (docs/architecture.md, Measurement).

    python experiments/scripts/fork_cost.py
"""
import gc
import statistics
import time

import numpy  # noqa: F401  a heavy parent, like the profiler or pytest
import pandas  # noqa: F401
import pyarrow  # noqa: F401
import sklearn.linear_model  # noqa: F401

from sonic.forking import fork_and_report
from sonic.execution import release_free_memory
def task():
    t=time.perf_counter(); release_free_memory(); return time.perf_counter()-t
def thawed():
    gc.unfreeze()
    return task()
def measure(freeze):
    inner, outer = [], []
    for _ in range(15):
        t=time.perf_counter()
        # fork_and_report freezes by itself now: "plain" thaws inside the child to show the old cost
        r = fork_and_report(task if freeze else thawed, lambda e: str(e))
        outer.append(time.perf_counter()-t); inner.append(r.value)
    return statistics.median(inner)*1000, statistics.median(outer)*1000
print("objects", len(gc.get_objects()))
for f in (False, True, False, True):
    print("freeze" if f else "plain ", "child release %.1f ms, whole fork %.1f ms" % measure(f))
