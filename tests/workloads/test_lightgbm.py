"""The ``lightgbm`` workload: generator, pca/train/combine through the reference executor, validator."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from sonic.metrics import RunResult
from sonic.reference import ReferenceExecutor
from workloads.lightgbm import (
    ACCURACY_FLOOR,
    APP,
    N_FEATURES,
    features,
    gen,
    num_shards,
    num_test_rows,
    validate,
)

SMALL = 2_000_000
LARGE = 10_000_000


@dataclass
class Run:
    input_path: Path
    result: RunResult

    def stage(self, name: str) -> int:
        return next(s.instances for s in self.result.stages if s.name == name)

    def stage_output_bytes(self, name: str) -> int:
        return next(s.output_bytes for s in self.result.stages if s.name == name)

    @property
    def result_json(self) -> Path:
        (path,) = [Path(p) for p in self.result.outputs if Path(p).name == "result.json"]
        return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Run]:
    """One reference run per size, shared by the tests of this module."""
    done: dict[int, Run] = {}
    for size in (SMALL, LARGE):
        root = tmp_path_factory.mktemp(f"lightgbm-{size}")
        path = root / "input.npz"
        gen(path, size, 11)
        done[size] = Run(path, ReferenceExecutor(APP, workdir=root / "run").run(path))
    return done


def _tampered(run: Run, dest: Path, **changes: object) -> list[Path]:
    dest.mkdir()
    copy = Path(shutil.copy(run.result_json, dest / "result.json"))
    doc = json.loads(copy.read_text())
    doc.update(changes)
    copy.write_text(json.dumps(doc))
    return [copy]


# --------------------------------------------------------------------------- generator
@pytest.mark.parametrize("size", [1_000_000, 2_000_000, 10_000_000])
def test_generator_size_is_close_to_request(tmp_path: Path, size: int) -> None:
    path = tmp_path / "in.npz"
    gen(path, size, 1)
    assert abs(path.stat().st_size - size) <= 0.1 * size
    with np.load(path) as data:
        X, y = data["X"], data["y"]
    assert X.dtype == np.float32 and X.shape[1] == N_FEATURES and len(X) == len(y)
    assert set(np.unique(y)) == {0, 1, 2}
    assert features(path) == {"rows": float(len(y)), "features": float(N_FEATURES)}


def test_generator_is_deterministic(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.npz", tmp_path / "b.npz", tmp_path / "c.npz"
    gen(a, 1_000_000, 5)
    gen(b, 1_000_000, 5)
    gen(c, 1_000_000, 6)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_generator_rows_are_shuffled(tmp_path: Path) -> None:
    """The pca stage holds out the last rows, so they must not all come from one class."""
    path = tmp_path / "in.npz"
    gen(path, 1_000_000, 2)
    with np.load(path) as data:
        tail = data["y"][-num_test_rows(len(data["y"])):]
    assert np.bincount(tail, minlength=3).min() > 0.2 * len(tail)


# --------------------------------------------------------------------------- pipeline
@pytest.mark.parametrize("size", [SMALL, LARGE])
def test_run_is_accurate(runs: dict[int, Run], size: int) -> None:
    run = runs[size]
    assert run.result.output_ok, run.result.output_detail
    result = json.loads(run.result_json.read_text())
    rows = int(run.result.features["rows"])
    assert result["n_models"] == num_shards(rows) == run.stage("train")
    assert result["n_test"] == num_test_rows(rows) <= 2000
    assert ACCURACY_FLOOR <= result["accuracy"] <= 1.0
    # Bagging should not hurt: the ensemble is at least about as good as its average member.
    assert result["accuracy"] >= np.mean(list(result["model_accuracy"].values())) - 0.01


def test_fanout_and_bytes_grow_with_size(runs: dict[int, Run]) -> None:
    small, large = runs[SMALL], runs[LARGE]
    assert small.stage("pca") == large.stage("pca") == 1
    assert small.stage("combine") == large.stage("combine") == 1
    assert large.stage("train") > small.stage("train") >= 2
    assert large.stage_output_bytes("pca") > small.stage_output_bytes("pca")
    assert large.stage_output_bytes("train") > small.stage_output_bytes("train")
    small_edges = {(e.src, e.dst): e.bytes for e in small.result.edges}
    large_edges = {(e.src, e.dst): e.bytes for e in large.result.edges}
    assert large_edges["pca", "train"] > small_edges["pca", "train"]


def test_pipeline_is_deterministic(runs: dict[int, Run], tmp_path: Path) -> None:
    run = runs[SMALL]
    again = ReferenceExecutor(APP, workdir=tmp_path / "run").run(run.input_path)
    first = json.loads(run.result_json.read_text())
    second = json.loads(Path(again.outputs[0]).read_text())
    assert first == second


@pytest.mark.timeout(120)
def test_children_do_not_hang_after_parent_used_openmp(tmp_path: Path) -> None:
    """The reference executor forks per instance; a parent that already ran a multi-threaded
    LightGBM (an initialised OpenMP pool) must not make the forked train instances hang."""
    rng = np.random.default_rng(0)
    X = rng.random((2000, 8))
    lgb.train({"objective": "binary", "num_threads": 2, "verbose": -1},
              lgb.Dataset(X, label=(X[:, 0] > 0.5).astype(int)), num_boost_round=5)
    path = tmp_path / "in.npz"
    gen(path, 1_000_000, 3)
    result = ReferenceExecutor(APP, workdir=tmp_path / "run").run(path)
    assert result.output_ok, result.output_detail


# --------------------------------------------------------------------------- validator
def test_validator_rejects_too_few_models(runs: dict[int, Run], tmp_path: Path) -> None:
    run = runs[LARGE]
    expected = num_shards(int(run.result.features["rows"]))
    verdict = validate(run.input_path, _tampered(run, tmp_path / "out", n_models=expected - 1))
    assert not verdict.ok and "models" in verdict.detail


def test_validator_rejects_low_accuracy(runs: dict[int, Run], tmp_path: Path) -> None:
    run = runs[SMALL]
    verdict = validate(run.input_path, _tampered(run, tmp_path / "out", accuracy=0.4))
    assert not verdict.ok and "floor" in verdict.detail
    nan = validate(run.input_path, _tampered(run, tmp_path / "nan", accuracy=float("nan")))
    assert not nan.ok


def test_validator_rejects_wrong_test_size(runs: dict[int, Run], tmp_path: Path) -> None:
    run = runs[SMALL]
    assert not validate(run.input_path, _tampered(run, tmp_path / "out", n_test=10)).ok


def test_validator_rejects_missing_or_broken_result(runs: dict[int, Run], tmp_path: Path) -> None:
    run = runs[SMALL]
    assert not validate(run.input_path, []).ok
    broken = tmp_path / "result.json"
    broken.write_text("{not json")
    verdict = validate(run.input_path, [broken])
    assert not verdict.ok and "unreadable" in verdict.detail
    partial = tmp_path / "partial" / "result.json"
    partial.parent.mkdir()
    partial.write_text(json.dumps({"accuracy": 0.99}))
    assert not validate(run.input_path, [partial]).ok
