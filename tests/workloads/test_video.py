"""Tests of the ``video`` workload through the reference executor.

Inputs of 2 MB and 8 MB are generated once per module; the classifier is trained once into
a temporary cache directory so the tests never touch ``~/.cache``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sonic.app import Pattern
from sonic.metrics import RunResult
from sonic.reference import ReferenceExecutor
from workloads.video import APP, FRAMES_PER_CHUNK, STRIDE, media, model, scene

# A hung forked instance must fail the test, not stall the suite.
pytestmark = pytest.mark.timeout(300)

MB = 1 << 20
SIZES = (2 * MB, 8 * MB)
SEED = 11


@dataclass
class Run:
    input_path: Path
    workdir: Path
    result: RunResult

    @property
    def summary_path(self) -> Path:
        (path,) = (Path(p) for p in self.result.outputs)
        return path

    def summary(self) -> dict[str, Any]:
        return json.loads(self.summary_path.read_text())


@pytest.fixture(scope="module", autouse=True)
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    # Forked stage instances inherit the environment, so this reaches classify too.
    path = tmp_path_factory.mktemp("sonic-cache")
    old = os.environ.get("SONIC_CACHE_DIR")
    os.environ["SONIC_CACHE_DIR"] = str(path)
    model.classifier.cache_clear()
    yield path
    model.classifier.cache_clear()
    if old is None:
        del os.environ["SONIC_CACHE_DIR"]
    else:
        os.environ["SONIC_CACHE_DIR"] = old


def _run(input_path: Path, workdir: Path) -> Run:
    result = ReferenceExecutor(APP, workdir=workdir).run(input_path)
    return Run(input_path, workdir, result)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> dict[int, Run]:
    base = tmp_path_factory.mktemp("video")
    out: dict[int, Run] = {}
    for size in SIZES:
        path = base / f"input-{size}.avi"
        APP.generator(path, size, SEED)
        out[size] = _run(path, base / f"run-{size}")
    return out


def test_app_structure() -> None:
    assert APP.topological_order() == ["split", "extract", "classify", "summarise"]
    patterns = {(e.src, e.dst): e.pattern for e in APP.edges()}
    assert patterns == {
        ("split", "extract"): Pattern.SCATTER,
        ("extract", "classify"): Pattern.ONE_TO_ONE,
        ("classify", "summarise"): Pattern.GATHER,
    }


def test_outputs_validate(runs: dict[int, Run]) -> None:
    for size, run in runs.items():
        assert run.result.output_ok, (size, run.result.output_detail)
        assert "accuracy" in run.result.output_detail


def test_input_size_is_close_to_request(runs: dict[int, Run]) -> None:
    for size, run in runs.items():
        actual = run.input_path.stat().st_size
        assert 0.8 * size <= actual <= 1.2 * size, (size, actual)


def test_fanout_and_bytes_grow_with_size(runs: dict[int, Run]) -> None:
    small, large = runs[SIZES[0]].result, runs[SIZES[1]].result
    n_small = {s.name: s.instances for s in small.stages}
    n_large = {s.name: s.instances for s in large.stages}
    assert n_small["split"] == n_large["split"] == 1
    assert n_small["extract"] < n_large["extract"]
    assert n_large["classify"] == n_large["extract"]
    assert n_large["summarise"] == 1

    def total_output(r: RunResult) -> int:
        return sum(s.output_bytes for s in r.stages)

    assert total_output(small) < total_output(large)
    for stage in ("split", "extract", "classify"):
        out_small = next(s.output_bytes for s in small.stages if s.name == stage)
        out_large = next(s.output_bytes for s in large.stages if s.name == stage)
        assert out_small < out_large, stage


def test_chunks_cover_the_video_in_order(runs: dict[int, Run]) -> None:
    run = runs[SIZES[1]]
    chunks = sorted((run.workdir / "split" / "0" / "out").iterdir())
    assert [c.name for c in chunks] == [f"chunk-{i:05d}" for i in range(len(chunks))]
    counts = [media.frame_count(c) for c in chunks]
    assert all(n == FRAMES_PER_CHUNK for n in counts[:-1])
    assert 0 < counts[-1] <= FRAMES_PER_CHUNK
    assert sum(counts) == media.frame_count(run.input_path)


def test_summary_content(runs: dict[int, Run]) -> None:
    run = runs[SIZES[1]]
    summary = run.summary()
    n_frames = media.frame_count(run.input_path)
    assert summary["frames"] == list(range(0, n_frames, STRIDE))
    assert len(summary["labels"]) == len(summary["frames"])
    assert sum(summary["counts"].values()) == len(summary["labels"])
    assert set(summary["counts"]) == set(scene.CLASSES)
    # A synthetic video of this length shows every class at least once.
    assert all(summary["counts"][c] > 0 for c in scene.CLASSES)


def test_seed_strip_round_trips_through_codec(runs: dict[int, Run]) -> None:
    frame = media.first_frame(runs[SIZES[0]].input_path)
    assert frame is not None
    assert scene.read_seed_strip(frame) == scene.video_seed(SEED)


def test_determinism(runs: dict[int, Run], tmp_path: Path) -> None:
    original = runs[SIZES[0]]
    again = tmp_path / "again.avi"
    APP.generator(again, SIZES[0], SEED)
    assert again.read_bytes() == original.input_path.read_bytes()

    other = tmp_path / "other.avi"
    APP.generator(other, SIZES[0], SEED + 1)
    assert other.read_bytes() != original.input_path.read_bytes()

    rerun = _run(again, tmp_path / "rerun")
    assert rerun.result.output_ok, rerun.result.output_detail

    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    # Every intermediate file (chunks, npz, label JSON) and the summary must be identical.
    assert files(rerun.workdir) == files(original.workdir)


def _tampered(run: Run, tmp_path: Path, edit: dict[str, Any]) -> Path:
    summary = run.summary()
    summary.update(edit)
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary))
    return path


def test_validator_rejects_tampered_summaries(runs: dict[int, Run], tmp_path: Path) -> None:
    run = runs[SIZES[0]]
    assert APP.validator(run.input_path, [run.summary_path]).ok
    summary = run.summary()
    frames, labels = summary["frames"], summary["labels"]

    missing_label = _tampered(run, tmp_path, {"labels": labels[:-1]})
    assert not APP.validator(run.input_path, [missing_label]).ok

    missing_frame = _tampered(run, tmp_path, {"frames": frames[:-1], "labels": labels[:-1]})
    assert not APP.validator(run.input_path, [missing_frame]).ok

    unknown = _tampered(run, tmp_path, {"labels": ["dog"] + labels[1:]})
    assert not APP.validator(run.input_path, [unknown]).ok

    bad_counts = dict(summary["counts"])
    bad_counts[scene.CLASSES[0]] += 1
    counts = _tampered(run, tmp_path, {"counts": bad_counts})
    assert not APP.validator(run.input_path, [counts]).ok

    # Structurally perfect but wrong: shift every label to the next class.
    wrong = [scene.CLASSES[(scene.CLASSES.index(x) + 1) % len(scene.CLASSES)] for x in labels]
    wrong_counts = {c: wrong.count(c) for c in scene.CLASSES}
    inaccurate = _tampered(run, tmp_path, {"labels": wrong, "counts": wrong_counts})
    verdict = APP.validator(run.input_path, [inaccurate])
    assert not verdict.ok and "accuracy" in verdict.detail

    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    assert not APP.validator(run.input_path, [garbage]).ok


def test_input_features(runs: dict[int, Run]) -> None:
    small = APP.feature_extractor(runs[SIZES[0]].input_path)
    large = APP.feature_extractor(runs[SIZES[1]].input_path)
    for feats in (small, large):
        assert feats["width"] == scene.WIDTH and feats["height"] == scene.HEIGHT
        assert feats["fps"] == scene.FPS
        assert feats["bitrate_bps"] > 0
    assert small["frames"] < large["frames"]
    assert small["duration_s"] < large["duration_s"]
    assert large["frames"] == media.frame_count(runs[SIZES[1]].input_path)


_TINY = dict(model.TRAINING_PARAMS, per_class=5, trees=2, seed=7)


def _train_tiny(_: int) -> str:
    return str(model.load_or_train(_TINY).n_estimators)


def test_classifier_cache_is_shared_and_concurrency_safe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SONIC_CACHE_DIR", str(tmp_path))
    with multiprocessing.get_context("fork").Pool(3) as pool:
        assert pool.map(_train_tiny, range(3)) == ["2", "2", "2"]
    files = sorted(p.name for p in (tmp_path / "video").iterdir())
    key = model.params_key(_TINY)
    assert files == [f"classifier-{key}.lock", f"classifier-{key}.pkl"]
    cached = model.model_path(_TINY).read_bytes()
    model.load_or_train(_TINY)  # a cache hit must not rewrite the file
    assert model.model_path(_TINY).read_bytes() == cached


def test_generator_rejects_bad_size(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="positive"):
        APP.generator(tmp_path / "x.avi", 0, 1)
