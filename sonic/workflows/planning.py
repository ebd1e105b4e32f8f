"""Glue between the models and the planner: predict for an input, then plan.

Kept apart from :mod:`sonic.planner` (pure: no I/O) because it reads fitted models from disk.
Until an app has fitted models, every stage is *untrusted*: the planner then sends every edge
through Remote-Storage (what Sonic does before its models are trustworthy) and says so.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Callable
from pathlib import Path

from models import AppModel
from models.app_model import EXTRAPOLATION_FACTOR
from models.persist import model_dir
from sonic.app import App, Parallelism, load_app
from sonic.cluster.spec import ClusterSpec, VMSpec, load_cluster
from sonic.errors import UserInputError
from sonic.plan import Plan
from sonic.planner import make_plan, render_dot, render_table
from sonic.planner.elastic import make_elastic_plan
from sonic.prediction import AppPrediction, Estimate, StagePrediction
from sonic.reference import input_refs
from sonic.sizes import parse_size

Echo = Callable[[str], None]


def untrusted_prediction(app: App, input_bytes: int) -> AppPrediction:
    """A placeholder prediction for an app with no models: one instance per stage, unknown costs."""
    stages = {
        name: StagePrediction(name, app.stages[name].instances, float(input_bytes), Estimate(1.0, 1.0),
                              Estimate(256.0, 256.0), Estimate(float(input_bytes), float(input_bytes)),
                              trusted=False)
        for name in app.topological_order()
    }
    return AppPrediction(app.name, input_bytes, stages, source="none")


def predict(app: App, input_bytes: int, root: Path, features: dict[str, float] | None = None) -> AppPrediction:
    """Predict every stage's parameters from the app's fitted models (or an untrusted placeholder)."""
    try:
        model = AppModel.load(app.name, root)
    except FileNotFoundError:
        prediction = untrusted_prediction(app, input_bytes)
        prediction.warnings.append(f"app {app.name!r} has no models under {root}: every edge uses Remote-Storage; "
                                   f"run `sonic profile {app.name}` (or learn from this run) to plan better")
        return prediction
    return model.predict(app, input_bytes, features=features)


def require_models(app: App, root: Path) -> None:
    """``sonic plan`` refuses to print placeholder numbers for an app never profiled."""
    if not (model_dir(root, app.name) / "manifest.json").exists():
        raise UserInputError(f"app {app.name!r} has no profile or models under {root}; run `sonic profile "
                             f"{app.name}` first (or pass --root / set SONIC_HOME to where its models are)")


def calibration_warning(cluster: ClusterSpec, cluster_path: Path) -> str | None:
    """A cluster file whose calibration was never measured plans on EC2-like defaults; on any
    other machine the predicted latencies (and so the chosen methods) can be off by 2x."""
    if cluster.calibration.measured:
        return None
    return (f"cluster {cluster_path} is not calibrated: the cost model uses EC2-like default bandwidths and "
            f"latencies, not this cluster's; run `sonic cluster calibrate --cluster {cluster_path}` once")


def plan_for(app: App, input_bytes: int, cluster: ClusterSpec, *, strategy: str = "sonic",
             objective: str = "latency", budget: float | None = None, deadline: float | None = None,
             root: Path = Path(".sonic"), features: dict[str, float] | None = None,
             measured: AppPrediction | None = None) -> tuple[Plan, AppPrediction]:
    if strategy == "oracle":
        if measured is None:
            raise UserInputError("the oracle strategy plans from a measured run; run the app once first")
        prediction = measured
    else:
        prediction = predict(app, input_bytes, root, features)
    # The coordinator warms every VM's workers before the clock starts (a warm pool, as a
    # serverless platform keeps), so plans are made for warm VMs.
    options = count_options(app, prediction, root, features) if strategy != "oracle" else None
    if options:
        # The prediction returned is the chosen counts' one: re-planning compares against it.
        return make_elastic_plan(app, options, cluster, objective=objective, strategy=strategy, budget=budget,
                                 deadline=deadline, warm=cluster.vm_names)
    plan = make_plan(app, prediction, cluster, objective=objective, strategy=strategy, budget=budget,
                     deadline=deadline, warm=cluster.vm_names)
    if prediction.source == "none":
        # A placeholder knows no instance count: pinning the elastic stages to its one instance
        # each ran a 2 GB sort as a single 6 GB reduce (experiments/memory_scale.py). Without a
        # chosen count the runtime uses the app's own, data-determined one.
        for name in app.elastic_stages():
            plan.stages[name].parallelism = None
    return plan, prediction


def candidate_counts(bounds: Parallelism, default: int) -> list[int]:
    """Counts the planner considers for an elastic stage: ``default`` (the data-determined
    count, clipped to the bounds) first, then the bounds and every power of two between them."""
    first = min(max(default, bounds.min), bounds.max)
    grid = {bounds.min, bounds.max} | {2 ** k for k in range(bounds.max.bit_length()) if bounds.min <= 2 ** k <= bounds.max}
    return [first] + sorted(grid - {first})


def count_options(app: App, base: AppPrediction, root: Path,
                  features: dict[str, float] | None = None) -> list[AppPrediction] | None:
    """One prediction per combination of candidate counts of the app's elastic stages, from the
    fitted models (``None``: no elastic stage, or no models to re-predict with).

    The base prediction's combination comes first. A count whose bytes per instance lie far
    outside what the profile measured for that stage (``EXTRAPOLATION_FACTOR``) is not a
    candidate: its per-instance predictions would be guesses. An elastic stage's count is the
    plan's decision, so an error of its fanout model cannot mislead the plan: a stage
    distrusted only for its fanout is trusted here.
    """
    elastic = app.elastic_stages()
    if not elastic or base.source != "models":
        return None
    try:
        model = AppModel.load(app.name, root)
    except FileNotFoundError:
        return None
    grids = [candidate_counts(b, base.stages[s].instances) for s, b in elastic.items()]
    options: list[AppPrediction] = []
    for k, counts in enumerate(itertools.product(*grids)):
        option = model.predict(app, base.input_bytes, features=features,
                               observed_instances=dict(zip(elastic, counts)))
        ranges = {name: model.stages_[name].input_range for name in elastic}
        if k > 0 and not all(lo / EXTRAPOLATION_FACTOR <= option.stages[name].input_bytes <= hi * EXTRAPOLATION_FACTOR
                             for name, (lo, hi) in ranges.items()):
            continue
        stages = {name: (dataclasses.replace(p, trusted=True, untrusted_reason="")
                         if name in elastic and p.untrusted_reason.startswith("fanout") else p)
                  for name, p in option.stages.items()}
        options.append(dataclasses.replace(option, stages=stages))
    return options if len(options) > 1 else None


def plan_command(app_spec: str, *, input_path: Path | None, input_size: str | None, objective: str,
                 budget: float | None, deadline: float | None, strategy: str, root: Path, as_json: bool,
                 dot: bool, cluster_path: Path, echo: Echo) -> Plan:
    """``sonic plan``: print the plan as a table, JSON or DOT."""
    app = load_app(app_spec)
    if (input_path is None) == (input_size is None):
        raise UserInputError("give exactly one of --input PATH or --input-size SIZE")
    features = None
    if input_path is not None:
        refs, _ = input_refs(input_path)
        input_bytes = sum(r.size for r in refs)
        features = app.features_of(input_path) or None
    else:
        input_bytes = parse_size(input_size or "0")
        features = _features_for_size(app, input_bytes, root, echo, quiet=as_json or dot)
    if strategy == "oracle":
        raise UserInputError("--strategy oracle plans from a measured run of the input; use it with `sonic run "
                             "APP --input X --strategy oracle`")
    require_models(app, root)
    if cluster_path.exists():
        cluster = load_cluster(cluster_path)
        uncalibrated = calibration_warning(cluster, cluster_path)
    else:
        cluster, uncalibrated = _default_cluster(echo, as_json or dot), None
    plan, prediction = plan_for(app, input_bytes, cluster, strategy=strategy, objective=objective, budget=budget,
                                deadline=deadline, root=root, features=features)
    if uncalibrated:
        prediction.warnings.append(uncalibrated)
    if not (as_json or dot):
        for warning in prediction.warnings:
            echo(f"warning: {warning}")
    if as_json:
        echo(json.dumps(plan.to_json(), indent=2))
    elif dot:
        echo(render_dot(plan, app))
    else:
        echo(render_table(plan))
    return plan


def _features_for_size(app: App, input_bytes: int, root: Path, echo: Echo, *, quiet: bool) -> dict[str, float] | None:
    """Without an input file, an app's declared features are those typical of the size."""
    try:
        model = AppModel.load(app.name, root)
    except FileNotFoundError:
        return None
    features = model.features_for_size(input_bytes)
    if features and not quiet:
        shown = ", ".join(f"{k}={v:.4g}" for k, v in features.items())
        echo(f"note: no input file: features {shown} are those typical of this size in the profile "
             "(plan with --input FILE to use an input's own)")
    return features or None


def _default_cluster(echo: Echo, quiet: bool) -> ClusterSpec:
    """Planning needs no running cluster: without a cluster file, plan for 4 default VMs."""
    if not quiet:
        echo("note: no cluster file; planning for 4 default VMs (2 cores, 4 GiB each, default calibration)")
    return ClusterSpec(vms=[VMSpec(f"vm{i}", f"vm{i}") for i in range(4)])
