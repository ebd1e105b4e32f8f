"""The sort workload written for Lithops (``FunctionExecutor.map`` + Lithops storage).

Run by :mod:`experiments.peer` in a subprocess whose ``HOME``, ``TMPDIR`` and
``LITHOPS_CONFIG_FILE`` point into a temporary directory: Lithops is configured offline with
its ``localhost`` compute backend (worker processes on this machine) and ``localhost``
storage backend (a directory under ``TMPDIR``), and nothing of it outlives the run.

The algorithm is the one of ``workloads.sort`` (same record format, same range
partitioning by the first 4 key bytes, same final sort by the full 10-byte key, same
validator), in Lithops' idiom: the input is one storage object; mapper ``i`` reads its byte
range of whole records (``--tasks`` ranges, default one per 4 MB) with a ranged GET (so no
split stage: that only helps Lithops) and writes R partition objects; reducer ``r`` reads
partition ``r`` of every mapper, sorts and writes ``sorted-r``. Timed: from the first ``map``
call to the last reducer's result, with the input already in storage and the worker pool
warmed by a no-op job (as Sonic's clock starts with the input in S3 and warm workers).

    python -m experiments.lithops_sort --input FILE --runs 1 --workers 2 --out result.json

(:mod:`experiments.peer` runs it once per measured run, each in a fresh process with a time
limit: Lithops 3.8's localhost backend sometimes never starts a queued job.)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

BUCKET = "storage"


def _map(i: int, m: int, key: str, first: int, end: int, prefix: str) -> int:
    import numpy as np

    from lithops import Storage

    from workloads.sort import RECORD_BYTES

    storage = Storage()
    raw = storage.get_object(BUCKET, key, extra_get_args={"Range": f"bytes={first}-{end - 1}"}) if end > first else b""
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    r = m
    part = ((records[:, :4].copy().view(">u4").ravel().astype(np.uint64) * np.uint64(r)) >> np.uint64(32)).astype(np.intp)
    order = np.argsort(part, kind="stable")
    bounds = np.searchsorted(part[order], np.arange(r + 1))
    grouped = records[order]
    for j in range(r):
        storage.put_object(BUCKET, f"{prefix}/part-{i:04d}-{j:04d}", grouped[bounds[j]:bounds[j + 1]].tobytes())
    return len(records)


def _reduce(j: int, m: int, prefix: str) -> int:
    import numpy as np

    from lithops import Storage

    from workloads.sort import RECORD_BYTES, _sort_keys

    storage = Storage()
    parts = [np.frombuffer(storage.get_object(BUCKET, f"{prefix}/part-{i:04d}-{j:04d}"), dtype=np.uint8)
             for i in range(m)]
    records = np.concatenate(parts).reshape(-1, RECORD_BYTES) if parts else np.empty((0, RECORD_BYTES), np.uint8)
    hi, lo = _sort_keys(records)
    storage.put_object(BUCKET, f"{prefix}/sorted-{j:04d}", records[np.lexsort((lo, hi))].tobytes())
    return len(records)


def _noop(x: int) -> int:
    return x


def _one_run(lithops: Any, config: dict[str, Any], storage: Any, input_path: Path, key: str, size: int, m: int,
             workers: int) -> dict[str, Any]:
    """One timed sort. Both executors are created (and the first warmed) before the clock."""
    from workloads.sort import APP, chunk_bounds

    map_exec = lithops.FunctionExecutor(config=config)
    reduce_exec = lithops.FunctionExecutor(config=config)
    map_exec.map(_noop, list(range(workers)))
    map_exec.get_result()
    prefix = f"sort-{uuid.uuid4().hex[:8]}"
    try:
        t0 = time.perf_counter()
        bounds = chunk_bounds(size, m)
        map_exec.map(_map, [{"i": i, "m": m, "key": key, "first": bounds[i], "end": bounds[i + 1], "prefix": prefix}
                            for i in range(m)])
        mapped = sum(_results(map_exec))
        t_map = time.perf_counter() - t0
        reduce_exec.map(_reduce, [{"j": j, "m": m, "prefix": prefix} for j in range(m)])
        reduced = sum(_results(reduce_exec))
        latency = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as tmp:
            outs = []
            for j in range(m):
                path = Path(tmp) / f"sorted-{j:04d}"
                path.write_bytes(storage.get_object(BUCKET, f"{prefix}/sorted-{j:04d}"))
                outs.append(path)
            verdict = APP.validator(input_path, outs) if APP.validator else None
    finally:
        for k in storage.list_keys(BUCKET, prefix=f"{prefix}/"):
            storage.delete_object(BUCKET, k)
        for ex in (map_exec, reduce_exec):
            try:
                ex.clean()
            except Exception as exc:  # noqa: BLE001 - cleanup of a throwaway temp dir; keep the result
                print(f"lithops clean: {exc}", file=sys.stderr)
    return {"latency_s": latency, "map_s": t_map, "records_mapped": mapped, "records_reduced": reduced,
            "output_ok": bool(verdict and verdict.ok), "output_detail": verdict.detail if verdict else "",
            "mappers": m, "reducers": m}


def _results(fexec: Any) -> list[Any]:
    return list(fexec.get_result())


def run(input_path: Path, runs: int, workers: int, tasks: int | None = None) -> dict[str, Any]:
    """``tasks`` mappers and as many reducers (default: ``workloads.sort.num_chunks``, 4 MB each)."""
    import lithops

    from workloads.sort import num_chunks

    config = {"lithops": {"backend": "localhost", "storage": "localhost", "log_level": "WARNING",
                          "data_limit": False},
              "localhost": {"runtime": sys.executable, "worker_processes": workers}}
    storage = lithops.Storage(config=config)
    size = input_path.stat().st_size
    key = f"input/{input_path.name}"
    with open(input_path, "rb") as fh:
        storage.put_object(BUCKET, key, fh)
    m = tasks or num_chunks(size)
    results = []
    for run_index in range(runs):
        results.append({**_one_run(lithops, config, storage, input_path, key, size, m, workers), "run": run_index})
    return {"lithops_version": lithops.__version__, "workers": workers, "input_bytes": size, "runs": results}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.lithops_sort")
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--tasks", type=int, default=None,
                        help="mappers (= reducers); default: one per 4 MB chunk, as workloads.sort without a plan")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    doc = run(args.input.resolve(), args.runs, args.workers, args.tasks)
    args.out.write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
