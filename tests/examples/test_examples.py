"""The example apps (``examples/``): real runs through the reference executor, validators that
catch wrong outputs, the shapes each app exists for, and a profile the models can fit."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from models import AppModel
from profiler import ProfileStore, profile_app
from sonic.app import App, load_app
from sonic.errors import ExecutionError
from sonic.metrics import RunResult
from sonic.reference import ReferenceExecutor

REPO_ROOT = Path(__file__).resolve().parents[2]
KB = 1_000
MB = 1_000_000

#: Two sizes per app, chosen so the size-driven fanout differs between them.
SIZES = {"topk": (1_500 * KB, 4 * MB), "starjoin": (1 * MB, 3 * MB), "skewed": (1 * MB, 2 * MB)}
#: The stage whose instance count each app's size (or content) drives.
FANOUT_STAGE = {"topk": "summarise", "starjoin": "join", "skewed": "sort_keys"}


@pytest.fixture(scope="module", autouse=True)
def examples_on_path() -> Iterator[None]:
    """``examples`` lives at the repository root, like a user's own package next to their data."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(REPO_ROOT))
        yield


def example(name: str) -> App:
    return load_app(f"examples.{name}:app")


def generate(app: App, path: Path, size: int, seed: int = 0) -> Path:
    assert app.generator is not None
    app.generator(path, size, seed)
    return path


def run(app: App, input_path: Path, workdir: Path) -> RunResult:
    """Run through the reference executor, keeping outputs in ``workdir``."""
    return ReferenceExecutor(app, workdir=workdir).run(input_path)


def instances_of(result: RunResult, stage: str) -> int:
    return next(s.instances for s in result.stages if s.name == stage)


# --------------------------------------------------------------------------- corruptions
def _edit_json(path: Path, change: Callable[[dict], None]) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc, sort_keys=True))


def _bump_top(doc: dict) -> None:
    doc["top"][0] -= 1


def _bump_category(doc: dict) -> None:
    first = next(iter(doc["categories"].values()))
    first["value"] += 1


def _flip_median(doc: dict) -> None:
    first = next(iter(doc["tallies"].values()))
    first["median_key"] ^= 1


CORRUPT = {"topk": _bump_top, "starjoin": _bump_category, "skewed": _flip_median}


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize("name", sorted(SIZES))
def test_runs_validate_at_two_sizes_and_corruption_is_caught(name: str, tmp_path: Path) -> None:
    app = example(name)
    fanouts = []
    for size in SIZES[name]:
        input_path = generate(app, tmp_path / f"in-{size}", size)
        result = run(app, input_path, tmp_path / f"work-{size}")
        assert result.output_ok, result.output_detail
        assert result.input_bytes == pytest.approx(size, rel=0.01)
        fanouts.append(instances_of(result, FANOUT_STAGE[name]))
        (output,) = (Path(p) for p in result.outputs)

        other = generate(app, tmp_path / f"other-{size}", size, seed=5)
        verdict = app.check_output(other, [output])
        assert not verdict.ok, f"{name}: output of seed 0 accepted for an input of seed 5"

        _edit_json(output, CORRUPT[name])
        verdict = app.check_output(input_path, [output])
        assert not verdict.ok, f"{name}: corrupted output accepted ({verdict.detail})"
        output.write_text("{}")
        assert not app.check_output(input_path, [output]).ok
        assert not app.check_output(input_path, []).ok
    assert fanouts[1] > fanouts[0], f"{name}: fanout of {FANOUT_STAGE[name]} did not grow with the input"


def test_topk_summaries_keep_their_size_while_fanout_grows(tmp_path: Path) -> None:
    from examples import topk

    app = example("topk")
    per_size: dict[int, tuple[int, set[int]]] = {}
    for size in (1 * MB, 3 * MB, 6 * MB):
        result = run(app, generate(app, tmp_path / f"in-{size}", size), tmp_path / f"work-{size}")
        assert result.output_ok, result.output_detail
        summaries = [m for m in result.instances if m.stage == "summarise"]
        per_size[size] = (len(summaries), {m.output_bytes for m in summaries})
        merge_in = next(s.input_bytes for s in result.stages if s.name == "merge")
        assert merge_in == len(summaries) * topk.SUMMARY_BYTES
    assert [n for n, _ in per_size.values()] == [1, 3, 6]
    assert all(sizes == {topk.SUMMARY_BYTES} for _, sizes in per_size.values())


def test_starjoin_has_two_sources_and_a_broadcast_join(tmp_path: Path) -> None:
    from examples import starjoin

    app = example("starjoin")
    assert app.sources() == ["load_dims", "load_facts"]
    patterns = {(e.src, e.dst): e.pattern.value for e in app.edges()}
    assert patterns[("load_facts", "join")] == "scatter" and patterns[("load_dims", "join")] == "broadcast"
    result = run(app, generate(app, tmp_path / "in", 2 * MB), tmp_path / "work")
    assert result.output_ok, result.output_detail
    joins = instances_of(result, "join")
    assert joins == 2 and instances_of(result, "aggregate") == joins
    dims_bytes = next(e.bytes for e in result.edges if e.src == "load_dims")
    assert dims_bytes == joins * starjoin.NUM_DIMS * starjoin.DIM_DTYPE.itemsize  # every join got the table


def test_starjoin_aggregate_output_per_instance_shrinks_as_fanout_grows(tmp_path: Path) -> None:
    app = example("starjoin")
    seen: list[tuple[int, int]] = []  # (fanout, total output bytes) of aggregate
    for size in (1 * MB, 3 * MB, 6 * MB):
        result = run(app, generate(app, tmp_path / f"in-{size}", size), tmp_path / f"work-{size}")
        assert result.output_ok, result.output_detail
        outputs = [m.output_bytes for m in result.instances if m.stage == "aggregate"]
        seen.append((len(outputs), sum(outputs)))
    assert [n for n, _ in seen] == [1, 3, 6]
    totals = [total for _, total in seen]
    assert max(totals) <= 1.15 * min(totals), f"aggregate's total output should stay about constant: {totals}"
    per_instance = [total / n for n, total in seen]
    # Fanout 1 -> 3 -> 6: per-instance bytes fall by about the same factors (3x, 2x).
    assert per_instance[0] > 2.5 * per_instance[1] and per_instance[1] > 1.8 * per_instance[2]


def test_starjoin_rejects_an_input_of_another_app(tmp_path: Path) -> None:
    other = generate(example("topk"), tmp_path / "topk.in", 100 * KB)
    with pytest.raises(ExecutionError, match="not a starjoin input"):
        run(example("starjoin"), other, tmp_path / "work")


def test_skewed_seed_gives_four_times_the_fanout_at_the_same_size(tmp_path: Path) -> None:
    from examples import skewed

    app = example("skewed")
    size = 2 * MB
    fanout = {}
    for seed in (0, 1, skewed.SKEW_SEED):
        result = run(app, generate(app, tmp_path / f"in-{seed}", size, seed), tmp_path / f"work-{seed}")
        assert result.output_ok, result.output_detail
        fanout[seed] = instances_of(result, "sort_keys")
        assert instances_of(result, "tally") == fanout[seed] == skewed.tenants_for(size, seed)
    assert fanout[0] == fanout[1] == 4
    assert fanout[skewed.SKEW_SEED] == 16
    # The feature hook cannot tell the two inputs apart: only the run itself reveals the fanout.
    assert app.features_of(tmp_path / "in-0") == app.features_of(tmp_path / f"in-{skewed.SKEW_SEED}")


@pytest.mark.parametrize("name", sorted(SIZES))
def test_generators_are_deterministic(name: str, tmp_path: Path) -> None:
    app = example(name)
    first = generate(app, tmp_path / "a", 300 * KB, seed=3).read_bytes()
    assert first == generate(app, tmp_path / "b", 300 * KB, seed=3).read_bytes()
    assert first != generate(app, tmp_path / "c", 300 * KB, seed=4).read_bytes()


@pytest.mark.parametrize("name", sorted(SIZES))
def test_profile_on_three_sizes_fits_models(name: str, tmp_path: Path) -> None:
    app = example(name)
    store = ProfileStore(tmp_path / "profiles")
    sizes = [500 * KB, 1 * MB, 2 * MB]
    summary = profile_app(app, sizes, 1, store=store)
    assert summary.invalid_outputs == 0
    model = AppModel(app.name).fit(store.load(app.name))
    assert {row["stage"] for row in model.report()} == set(app.stages)
    prediction = model.predict(app, 4 * MB)
    assert set(prediction.stages) == set(app.stages)
    for stage in prediction.stages.values():
        assert stage.instances >= 1
        assert math.isfinite(stage.time_s.mean) and math.isfinite(stage.memory_mb.hi)
        assert math.isfinite(stage.output_bytes.mean) and stage.output_bytes.mean >= 0
