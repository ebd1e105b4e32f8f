"""Synthetic stand-ins for planning: the three sample DAGs, a large DAG and clusters.

The functions are dummies (the planner never runs them); predictions are plausible figures
for a ~50-100 MB input. Used by the planner's benchmark (``python -m experiments.bench_planner``)
and tests, so neither depends on the real workloads.
"""

from __future__ import annotations

from collections.abc import Mapping

from sonic.app import App, Context
from sonic.cluster.spec import Calibration, ClusterSpec, VMSpec
from sonic.prediction import AppPrediction, Estimate, StagePrediction

MB = 1_000_000


def _noop(ctx: Context) -> None:
    """Placeholder stage function: planning never runs it."""


def stage_prediction(name: str, instances: int, time_s: float, memory_mb: float, output_bytes: float,
                     input_bytes: float = 0.0, trusted: bool = True) -> StagePrediction:
    return StagePrediction(name, instances, input_bytes, Estimate.exact(time_s), Estimate.exact(memory_mb),
                           Estimate.exact(output_bytes), trusted)


def prediction_for(app: App, input_bytes: int, stages: Mapping[str, StagePrediction]) -> AppPrediction:
    return AppPrediction(app.name, input_bytes, dict(stages))


def cluster(n_vms: int, *, cores: int = 2, memory_mb: int = 8192, price_per_hour: float = 0.096,
            calibration: Calibration | None = None) -> ClusterSpec:
    """``n_vms`` identical VMs named vm0, vm1, ... with the given (or default) calibration."""
    vms = [VMSpec(f"vm{i}", f"10.213.0.{10 + i}", cores, memory_mb, price_per_hour) for i in range(n_vms)]
    return ClusterSpec(vms, calibration=calibration or Calibration())


def video(chunks: int = 19, input_bytes: int = 50 * MB) -> tuple[App, AppPrediction]:
    """split -scatter-> extract -one-to-one-> classify -gather-> summarise."""
    app = App("video")
    app.add_stage(_noop, name="split")
    app.add_stage(_noop, name="extract", after="split", pattern="scatter")
    app.add_stage(_noop, name="classify", after="extract", pattern="one-to-one")
    app.add_stage(_noop, name="summarise", after="classify", pattern="gather")
    chunk = input_bytes / chunks
    return app, prediction_for(app, input_bytes, {
        "split": stage_prediction("split", 1, 1.5, 300, input_bytes, input_bytes),
        "extract": stage_prediction("extract", chunks, 1.2, 400, chunk * 0.6, chunk),
        "classify": stage_prediction("classify", chunks, 2.5, 900, 20_000, chunk * 0.6),
        "summarise": stage_prediction("summarise", 1, 0.2, 150, 50_000, chunks * 20_000),
    })


def lightgbm(models: int = 8, input_bytes: int = 40 * MB) -> tuple[App, AppPrediction]:
    """pca -scatter-> train -gather-> combine."""
    app = App("lightgbm")
    app.add_stage(_noop, name="pca")
    app.add_stage(_noop, name="train", after="pca", pattern="scatter")
    app.add_stage(_noop, name="combine", after="train", pattern="gather")
    reduced = input_bytes * 0.4
    return app, prediction_for(app, input_bytes, {
        "pca": stage_prediction("pca", 1, 3.0, 600, reduced, input_bytes),
        "train": stage_prediction("train", models, 8.0, 1200, 2 * MB, reduced / models),
        "combine": stage_prediction("combine", 1, 1.5, 700, 100_000, models * 2 * MB),
    })


def sort(partitions: int = 8, input_bytes: int = 100 * MB) -> tuple[App, AppPrediction]:
    """split -scatter-> map -scatter-> reduce (MapReduce sort with a shuffle)."""
    app = App("sort")
    app.add_stage(_noop, name="split")
    app.add_stage(_noop, name="map", after="split", pattern="scatter")
    app.add_stage(_noop, name="reduce", after="map", pattern="scatter")
    part = input_bytes / partitions
    return app, prediction_for(app, input_bytes, {
        "split": stage_prediction("split", 1, 1.0, 300, input_bytes, input_bytes),
        "map": stage_prediction("map", partitions, 1.5, 500, part, part),
        "reduce": stage_prediction("reduce", partitions, 2.0, 500, part, part),
    })


def samples() -> dict[str, tuple[App, AppPrediction]]:
    return {"video": video(), "lightgbm": lightgbm(), "sort": sort()}


def wide(blocks: int = 25, width: int = 19) -> tuple[App, AppPrediction]:
    """A large fork-join DAG: ``blocks`` x (head -scatter-> a -one-to-one-> b -gather-> tail,
    plus head -broadcast-> tail), blocks chained tail -> next head. 25 x 19 gives 100 stages
    and 1000 instances."""
    app = App("wide")
    preds: dict[str, StagePrediction] = {}
    previous: str | None = None
    for i in range(blocks):
        head, a, b, tail = f"head{i}", f"a{i}", f"b{i}", f"tail{i}"
        app.add_stage(_noop, name=head, after=previous, pattern="one-to-one")
        app.add_stage(_noop, name=a, after=head, pattern="scatter")
        app.add_stage(_noop, name=b, after=a, pattern="one-to-one")
        app.add_stage(_noop, name=tail, after={b: "gather", head: "broadcast"})
        scale = 1.0 + (i % 5) * 0.3
        preds[head] = stage_prediction(head, 1, 0.5 * scale, 400, 40 * MB * scale, 10 * MB)
        preds[a] = stage_prediction(a, width, 1.0 * scale, 600, 3 * MB, 2 * MB * scale)
        preds[b] = stage_prediction(b, width, 0.8, 600, 1 * MB * scale, 3 * MB)
        preds[tail] = stage_prediction(tail, 1, 0.4, 500, 10 * MB, width * MB * scale)
        previous = tail
    return app, prediction_for(app, 10 * MB, preds)
