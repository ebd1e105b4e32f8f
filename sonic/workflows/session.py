"""``sonic run`` on a cluster: load, plan (or take a plan), execute, learn.

With no ``--plan``, the run is the full Sonic loop: predict this input's parameters, plan for
the objective, execute, append the measurements to the profile and refit the models.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import click

from models.app_model import AppModel
from models.refit import learn as learn_from
from sonic.app import App
from sonic.cluster.spec import ClusterSpec, load_cluster
from sonic.comparison import compare
from sonic.errors import AuthenticationError, ClusterFileError
from sonic.measured import input_digest, load_measured, save_measured
from sonic.metrics import RunResult
from sonic.plan import Plan
from sonic.planner import make_plan
from sonic.prediction import AppPrediction, StagePrediction
from sonic.progress import InstanceProgress, ProgressMode, as_mode
from sonic.reference import input_refs
from sonic.runtime.client import Timeouts
from sonic.runtime.coordinator import Coordinator
from sonic.runtime.journal import Journal
from sonic.runtime.protocol import read_secret
from sonic.runtime.replan import DEFAULT_THRESHOLD, ModelReplanner
from sonic.workflows.planning import calibration_warning, plan_for

Echo = Callable[[str], None]


def open_coordinator(cluster: ClusterSpec, *, progress: bool | ProgressMode = False, echo: Echo = click.echo,
                     stage_timeout_s: float | None = None, lease_s: float | None = None) -> Coordinator:
    if not cluster.secret_file:
        raise ClusterFileError("cluster file has no secret_file; agents cannot be authenticated without one")
    mode = as_mode(progress)
    try:
        secret = read_secret(cluster.secret_file)
    except AuthenticationError as exc:  # missing, unreadable or world-readable: the user's file to fix
        raise ClusterFileError(str(exc)) from None
    timeouts = Timeouts(lease_s=lease_s) if lease_s is not None else Timeouts()
    return Coordinator(cluster, secret, progress=InstanceProgress(mode, indent="  ") if mode.shows else None,
                       instance_timeout_s=stage_timeout_s,
                       timeouts=timeouts)


def run_on_cluster(app: App, input_path: Path, *, cluster_path: Path, plan_path: Path | None, strategy: str | None,
                   objective: str, progress: bool | ProgressMode, echo: Echo, root: Path, app_spec: str | None = None,
                   learn: bool = True, output_dir: Path | None = None,
                   replan_threshold: float | None = DEFAULT_THRESHOLD, stage_timeout_s: float | None = None,
                   lease_s: float | None = None, resume: str | None = None) -> RunResult:
    """Plan (or load a plan), execute, then learn from the run (unless ``learn`` is false).

    ``--strategy oracle`` plans from the measured parameters of an earlier run of the same
    input (:mod:`sonic.measured`); without one it first runs the input once with the
    all-remote strategy as a probe, says so, and plans from that. A plan made from the models
    is re-planned mid-job when a finished stage deviates from its prediction by more than
    ``replan_threshold`` (None: never), see :mod:`sonic.runtime.replan`.
    """
    cluster = load_cluster(cluster_path)
    refs, _ = input_refs(input_path)
    input_bytes = sum(r.size for r in refs)
    features = app.features_of(input_path) or None
    spec = app_spec or app.name
    digest = input_digest(input_path)
    prediction = None
    journal_dir = root / "jobs"
    run = RunOptions(stage_timeout_s, lease_s, resume, journal_dir)
    if resume is not None:  # the plan the crashed run executed, from its journal
        plan = Journal(journal_dir, resume).read()[0].plan_object(app, cluster.vm_names)
    elif plan_path is not None:
        plan = Plan.load(plan_path).check(app, cluster.vm_names)
    else:
        measured = None
        if strategy == "oracle":
            measured = load_measured(root, app.name, digest)
            if measured is None:
                echo_err("note: no measured run of this input yet: probing it once with the remote strategy "
                         "(not timed as the oracle)")
                probe = _execute(app, spec, input_path, cluster, plan_for(
                    app, input_bytes, cluster, strategy="remote", objective=objective, root=root,
                    features=features)[0], progress)
                _remember(root, digest, probe)
                measured = AppPrediction.from_run(probe)
        plan, prediction = plan_for(app, input_bytes, cluster, strategy=strategy or "sonic", objective=objective,
                                    root=root, features=features, measured=measured)
        for note in plan.notes:
            echo_err(f"note: {note}")
        uncalibrated = calibration_warning(cluster, cluster_path) if strategy in (None, "sonic", "oracle") else None
        for warning in [*prediction.warnings, *([uncalibrated] if uncalibrated else [])]:
            echo_err(f"warning: {warning}")
    replanner = None
    if prediction is not None and prediction.source == "models" and replan_threshold is not None:
        replanner = _replanner(app, input_bytes, features, cluster, plan, prediction, strategy or "sonic",
                               objective, root, replan_threshold)
    result = _execute(app, spec, input_path, cluster, plan, progress, output_dir, replanner, run)
    for record in result.replans:
        changed = {k: v for k, v in record["methods"].items() if v["old"] != v["new"]}
        what = ", ".join(f"{k} {v['predicted']:g} predicted vs {v['observed']:g} observed"
                         for k, v in record["deviations"].items())
        moved = ", ".join(f"{k} {v['old']}->{v['new']}" for k, v in changed.items())
        echo_err(f"re-planned after stage {record['after_stage']} ({what}); "
                 + (f"methods changed: {moved}" if changed else "methods unchanged, placement re-apportioned"))
    if prediction is not None:
        result.predicted_vs_actual = compare(plan, prediction, result)
    _remember(root, digest, result)
    # Every validated run teaches the models (Sonic's online refit), whatever plan it ran,
    # but a refit only replaces the models if it predicts the newest runs no worse.
    if learn:
        outcome = learn_from(app, result, root)
        result.learning = {**outcome.to_json(), "store": str(root)}
        echo_err(f"{outcome.line} [{root}]")
    else:
        result.learning = {"recorded": False, "replaced": False, "reason": "--no-learn", "store": str(root)}
    return result


def echo_err(line: str) -> None:
    click.echo(line, err=True)


def _replanner(app: App, input_bytes: int, features: dict[str, float] | None, cluster: ClusterSpec, plan: Plan,
               prediction: AppPrediction, strategy: str, objective: str, root: Path,
               threshold: float) -> ModelReplanner | None:
    try:
        model = AppModel.load(app.name, root)
    except FileNotFoundError:
        return None

    def repredict(observed: Mapping[str, StagePrediction], instances: Mapping[str, int]) -> AppPrediction:
        # The counts the plan chose for elastic stages stay: a re-plan revisits methods and placement.
        known = {**plan.chosen_counts(), **instances}
        return model.predict(app, input_bytes, features, observed=observed, observed_instances=known)

    def replan(new: AppPrediction) -> Plan:
        return make_plan(app, new, cluster, objective=objective, strategy=strategy, warm=cluster.vm_names)

    return ModelReplanner(prediction, plan, repredict, replan, threshold)


@dataclass(frozen=True)
class RunOptions:
    """Reliability settings of one `sonic run` (see docs/reliability.md)."""

    stage_timeout_s: float | None = None   # overrides every stage's timeout
    lease_s: float | None = None           # job lease on the agents (None: the default)
    resume: str | None = None              # job id of a crashed run to finish
    journal_dir: Path | None = None        # where job journals live


def _execute(app: App, spec: str, input_path: Path, cluster: ClusterSpec, plan: Plan, progress: bool | ProgressMode,
             output_dir: Path | None = None, replanner: ModelReplanner | None = None,
             run: RunOptions = RunOptions()) -> RunResult:
    coordinator = open_coordinator(cluster, progress=progress, stage_timeout_s=run.stage_timeout_s,
                                   lease_s=run.lease_s)
    try:
        return coordinator.execute(app, spec, input_path, plan, output_dir=output_dir, replanner=replanner,
                                   journal_dir=run.journal_dir, resume=run.resume)
    finally:
        coordinator.close()


def _remember(root: Path, digest: str, result: RunResult) -> None:
    """Keep the run's exact parameters for the oracle (only of runs that validated)."""
    if result.output_ok:
        save_measured(root, digest, AppPrediction.from_run(result))
