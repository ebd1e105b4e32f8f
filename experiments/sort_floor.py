"""The single-process compute floor of the sort workload: one numpy sort of the same records.

Same record format and key as :mod:`workloads.sort` (gensort 100-byte records, ordered by the
full 10-byte key compared bytewise, via ``workloads.sort._sort_keys``): read the input file,
sort it, write one output file. The clock covers exactly that (read + sort + write, after
the imports), with the input file already on local disk as the other systems have theirs in
their storage; the output then goes through the same ``workloads.sort`` validator, outside
the clock (it streams in blocks, so it is feasible at any size).

Run by :mod:`experiments.peer` in a fresh process per measurement, so no run inherits a warm
heap or page-cache-resident output of another:

    python -m experiments.sort_floor --input FILE --workdir DIR --out result.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from workloads.sort import APP, RECORD_BYTES, _sort_keys


def sort_file(input_path: Path, output_path: Path) -> dict[str, float]:
    """Sort ``input_path``'s records into ``output_path``; seconds per phase and in total."""
    t0 = time.perf_counter()
    records = np.fromfile(input_path, dtype=np.uint8)
    if records.size % RECORD_BYTES:
        raise ValueError(f"{input_path.name}: {records.size} bytes is not a whole number of "
                         f"{RECORD_BYTES}-byte records")
    records = records.reshape(-1, RECORD_BYTES)
    t_read = time.perf_counter()
    hi, lo = _sort_keys(records)
    order = np.lexsort((lo, hi))
    ordered = records[order]
    t_sort = time.perf_counter()
    ordered.tofile(output_path)
    t_end = time.perf_counter()
    return {"latency_s": t_end - t0, "read_s": t_read - t0, "sort_s": t_sort - t_read, "write_s": t_end - t_sort,
            "records": float(len(records))}


def run(input_path: Path, workdir: Path, validate: bool = True) -> dict[str, Any]:
    output_path = workdir / "sorted-0000"
    try:
        timings = sort_file(input_path, output_path)
        verdict = APP.validator(input_path, [output_path]) if (validate and APP.validator) else None
    finally:
        output_path.unlink(missing_ok=True)
    return {**timings, "output_ok": bool(verdict.ok) if verdict else None,
            "output_detail": verdict.detail if verdict else "not validated",
            "numpy_version": np.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.sort_floor")
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, required=True, help="an existing directory for the output file")
    parser.add_argument("--out", type=Path, required=True, help="where to write the result JSON")
    parser.add_argument("--no-validate", action="store_true")
    args = parser.parse_args()
    doc = run(args.input.resolve(), args.workdir, validate=not args.no_validate)
    args.out.write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
