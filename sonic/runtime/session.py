"""``sonic run`` on a cluster: load, plan (or take a plan), execute, learn.

With no ``--plan``, the run is the full Sonic loop: predict this input's parameters, plan for
the objective, execute, append the measurements to the profile and refit the models.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from sonic.app import App
from sonic.cluster.spec import ClusterSpec, load_cluster
from sonic.errors import AuthenticationError, ClusterFileError
from sonic.metrics import RunResult
from sonic.plan import Plan
from sonic.reference import input_refs
from sonic.runtime.coordinator import Coordinator
from sonic.runtime.protocol import read_secret

Echo = Callable[[str], None]


def open_coordinator(cluster: ClusterSpec, *, progress: bool = False, echo: Echo = click.echo) -> Coordinator:
    if not cluster.secret_file:
        raise ClusterFileError("cluster file has no secret_file; agents cannot be authenticated without one")

    def show(stage: str, done: int, total: int) -> None:
        click.echo(f"\r  {stage}: {done}/{total} instances", nl=done == total, err=True)

    try:
        secret = read_secret(cluster.secret_file)
    except AuthenticationError as exc:  # missing, unreadable or world-readable: the user's file to fix
        raise ClusterFileError(str(exc)) from None
    return Coordinator(cluster, secret, progress=show if progress else None)


def run_on_cluster(app: App, input_path: Path, *, cluster_path: Path, plan_path: Path | None, strategy: str | None,
                   objective: str, progress: bool, echo: Echo, root: Path = Path(".sonic"),
                   app_spec: str | None = None) -> RunResult:
    from sonic.planning import plan_for

    cluster = load_cluster(cluster_path)
    refs, _ = input_refs(input_path)
    input_bytes = sum(r.size for r in refs)
    features = app.features_of(input_path) or None
    prediction = None
    if plan_path is not None:
        plan = Plan.load(plan_path).check(app, cluster.vm_names)
    else:
        plan, prediction = plan_for(app, input_bytes, cluster, strategy=strategy or "sonic", objective=objective,
                                    root=root, features=features)
        for note in plan.notes:
            click.echo(f"note: {note}", err=True)
    coordinator = open_coordinator(cluster, progress=progress, echo=echo)
    try:
        result = coordinator.execute(app, app_spec or app.name, input_path, plan)
    finally:
        coordinator.close()
    if prediction is not None:
        from sonic.comparison import compare

        result.predicted_vs_actual = compare(plan, prediction, result)
    # Every run teaches the models (Sonic's online refit), whatever plan it ran.
    from models import refit

    refit(app, result, root)
    return result
