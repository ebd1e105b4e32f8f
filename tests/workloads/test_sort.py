"""The ``sort`` workload: generator, split/map/reduce through the reference executor, validator."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from sonic.metrics import RunResult
from sonic.reference import ReferenceExecutor
from workloads.sort import APP, CHUNK_BYTES, RECORD_BYTES, gen, validate

SMALL = 1_000_000
LARGE = 10_000_000


@dataclass
class Run:
    input_path: Path
    result: RunResult

    def stage(self, name: str) -> int:
        return next(s.instances for s in self.result.stages if s.name == name)

    @property
    def outputs(self) -> list[Path]:
        return [Path(p) for p in self.result.outputs]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Run]:
    """One reference run per size, shared by the tests of this module."""
    done: dict[int, Run] = {}
    for size in (SMALL, LARGE):
        root = tmp_path_factory.mktemp(f"sort-{size}")
        path = root / "input.dat"
        gen(path, size, 7)
        result = ReferenceExecutor(APP, workdir=root / "run").run(path)
        done[size] = Run(path, result)
    return done


def _copy_outputs(run: Run, dest: Path) -> list[Path]:
    dest.mkdir()
    return [Path(shutil.copy(p, dest / p.name)) for p in run.outputs]


def _records(path: Path) -> np.ndarray:
    return np.frombuffer(path.read_bytes(), dtype=np.uint8).reshape(-1, RECORD_BYTES).copy()


# --------------------------------------------------------------------------- generator
def test_generator_size_and_layout(tmp_path: Path) -> None:
    path = tmp_path / "in.dat"
    gen(path, 12_345, 1)
    assert path.stat().st_size == 12_300  # rounded down to whole records
    rec = _records(path)
    assert bytes(rec[5, 10:12]) == b"\x00\x11"
    assert bytes(rec[5, 12:44]) == b"%032X" % 5  # record number in ASCII hex, like gensort
    assert bytes(rec[5, 96:]) == b"\xcc\xdd\xee\xff"
    tiny = tmp_path / "tiny.dat"
    gen(tiny, 10, 1)
    assert tiny.stat().st_size == RECORD_BYTES  # at least one record


def test_generator_is_deterministic(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    gen(a, 2_000_000, 42)
    gen(b, 2_000_000, 42)
    gen(c, 2_000_000, 43)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes()[:10] != c.read_bytes()[:10]
    # Fixed generation blocks: a smaller input is a prefix of a larger one with the same seed.
    d = tmp_path / "d"
    gen(d, 733_300, 42)
    assert a.read_bytes()[:733_300] == d.read_bytes()


def test_generator_keys_are_uniform(tmp_path: Path) -> None:
    path = tmp_path / "in.dat"
    gen(path, 2_000_000, 3)
    first = _records(path)[:, 0]
    counts = np.bincount(first, minlength=256)
    # 20000 draws over 256 values: about 78 each; a skewed generator would unbalance reducers.
    assert counts.min() > 40 and counts.max() < 130


# --------------------------------------------------------------------------- pipeline
@pytest.mark.parametrize("size", [SMALL, LARGE])
def test_run_is_sorted_and_complete(runs: dict[int, Run], size: int) -> None:
    run = runs[size]
    assert run.result.output_ok, run.result.output_detail
    assert run.result.features == {"records": size // RECORD_BYTES}
    out = np.concatenate([_records(p) for p in sorted(run.outputs, key=lambda p: p.name)])
    keys = [bytes(k) for k in out[:, :10]]
    assert keys == sorted(keys)
    assert len(out) == size // RECORD_BYTES


def test_fanout_and_bytes_grow_with_size(runs: dict[int, Run]) -> None:
    small, large = runs[SMALL], runs[LARGE]
    for run, size in ((small, SMALL), (large, LARGE)):
        m = -(-size // CHUNK_BYTES)
        assert run.stage("split") == 1
        assert run.stage("map") == m
        assert run.stage("reduce") == m  # R = M
        # Every mapper writes every partition, so the shuffle moves M x R objects.
        map_outputs = sum(i.n_outputs for i in run.result.instances if i.stage == "map")
        assert map_outputs == m * m
    assert large.stage("map") > small.stage("map")
    assert large.stage("reduce") > small.stage("reduce")
    small_bytes = {e.src: e.bytes for e in small.result.edges}
    large_bytes = {e.src: e.bytes for e in large.result.edges}
    for src in ("split", "map"):
        assert large_bytes[src] > small_bytes[src]
    assert sum(p.stat().st_size for p in large.outputs) == LARGE
    assert sum(p.stat().st_size for p in small.outputs) == SMALL


def test_reducers_get_one_partition_from_every_mapper(runs: dict[int, Run]) -> None:
    run = runs[LARGE]
    workdir = run.outputs[0].parents[3]  # <workdir>/reduce/<i>/out/sorted-XXXX
    m, r = run.stage("map"), run.stage("reduce")
    for i in range(m):
        names = sorted(p.name for p in (workdir / "map" / str(i) / "out").iterdir())
        assert names == [f"part-{j:04d}" for j in range(r)]
    # Key ranges are disjoint and in name order: each reducer's first key is above the last
    # key of the previous one (checked across files by the validator; here per file pair).
    ordered = sorted(run.outputs, key=lambda p: p.name)
    for before, after in zip(ordered, ordered[1:]):
        assert bytes(_records(before)[-1, :10]) <= bytes(_records(after)[0, :10])


# --------------------------------------------------------------------------- validator
def test_validator_rejects_swapped_records(runs: dict[int, Run], tmp_path: Path) -> None:
    run = runs[LARGE]
    outputs = _copy_outputs(run, tmp_path / "out")
    target = max(outputs, key=lambda p: p.stat().st_size)
    rec = _records(target)
    rec[[0, -1]] = rec[[-1, 0]]
    rec.tofile(target)
    verdict = validate(run.input_path, outputs)
    assert not verdict.ok and "smaller key" in verdict.detail


def test_validator_rejects_a_missing_record(runs: dict[int, Run], tmp_path: Path) -> None:
    run = runs[SMALL]
    outputs = _copy_outputs(run, tmp_path / "out")
    rec = _records(outputs[0])
    np.delete(rec, 17, axis=0).tofile(outputs[0])
    verdict = validate(run.input_path, outputs)
    assert not verdict.ok and "records" in verdict.detail


def test_validator_rejects_a_replaced_record(runs: dict[int, Run], tmp_path: Path) -> None:
    run = runs[SMALL]
    outputs = _copy_outputs(run, tmp_path / "out")
    rec = _records(outputs[0])
    rec[18] = rec[17]  # same count, still sorted, but one record lost: only the checksum sees it
    rec.tofile(outputs[0])
    verdict = validate(run.input_path, outputs)
    assert not verdict.ok and "checksum" in verdict.detail


def test_validator_rejects_a_corrupted_payload(runs: dict[int, Run], tmp_path: Path) -> None:
    run = runs[SMALL]
    outputs = _copy_outputs(run, tmp_path / "out")
    rec = _records(outputs[0])
    rec[100, 50] ^= 0x01
    rec.tofile(outputs[0])
    assert not validate(run.input_path, outputs).ok


def test_validator_rejects_files_out_of_range_order(runs: dict[int, Run], tmp_path: Path) -> None:
    run = runs[LARGE]
    outputs = sorted(_copy_outputs(run, tmp_path / "out"), key=lambda p: p.name)
    first, last = outputs[0], outputs[-1]
    tmp = first.with_name("tmp")
    first.rename(tmp)
    last.rename(first)
    tmp.rename(last)
    assert not validate(run.input_path, outputs).ok


def test_validator_rejects_partial_records_and_no_outputs(runs: dict[int, Run], tmp_path: Path) -> None:
    run = runs[SMALL]
    outputs = _copy_outputs(run, tmp_path / "out")
    with outputs[0].open("ab") as fh:
        fh.write(b"x")
    verdict = validate(run.input_path, outputs)
    assert not verdict.ok and "multiple" in verdict.detail
    assert not validate(run.input_path, []).ok
