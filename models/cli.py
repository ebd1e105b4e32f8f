"""``sonic models APP``: the work behind the verb (``sonic/cli.py`` only wires options)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from models.app_model import AppModel
from models.persist import ModelsNotFoundError
from models.refit import app_lock
from profiler.store import ProfileStore
from sonic.app import App, load_app
from sonic.errors import NotFittedError

Echo = Callable[[str], None]


def current_model(app: App, root: Path) -> AppModel:
    """The saved models of ``app``; fitted from the profile only if none were saved yet.

    Saved models are never refitted here: after a run, new rows wait in the profile until a
    refit wins the champion/challenger test (:mod:`models.refit`), and showing the models
    must not bypass it."""
    try:
        return AppModel.load(app.name, root)
    except ModelsNotFoundError:
        if not ProfileStore(root).parts(app.name):
            raise
    with app_lock(Path(root), app.name):
        model = AppModel.for_app(app).fit(ProfileStore(root).load(app.name))
        model.save(root)
    return model


def show_models(app_spec: str, root: Path | str = Path(".sonic"), as_json: bool = False,
                plot_path: Path | None = None, *, echo: Echo = click.echo) -> list[dict[str, Any]]:
    """Print per stage and metric the chosen form, samples and held-out MAPE; return the rows."""
    root = Path(root)
    app = load_app(app_spec)
    try:
        model = current_model(app, root)
    except ModelsNotFoundError:
        raise NotFittedError(f"app {app.name!r} has no profile under {root}; "
                             f"run `sonic profile {app_spec}` first") from None
    rows = model.report()
    if as_json:
        echo(json.dumps(rows, indent=2))
    else:
        echo(format_report(rows))
    if plot_path is not None:
        from models.plot import plot_models  # matplotlib: imported only when a plot is asked for

        written = plot_models(model, ProfileStore(root).load(app.name), Path(plot_path))
        if not as_json:
            echo(f"plot written to {written}")
    return rows


def format_report(rows: list[dict[str, Any]]) -> str:
    """A fixed-width table of report rows."""
    width = max([22, *(len(str(r["model"])) for r in rows)])
    head = f"{'stage':<16} {'metric':<13} {'model':<{width}} {'samples':>7} {'mape':>7}  trusted"
    lines = [head, "-" * len(head)]
    for r in rows:
        mape = "n/a" if r["mape"] is None else f"{100 * r['mape']:.1f}%"
        lines.append(f"{r['stage']:<16} {r['metric']:<13} {r['model']:<{width}} {r['n_samples']:>7} {mape:>7}  "
                     f"{'yes' if r['trusted'] else 'no'}")
    why = {r["stage"]: r.get("untrusted_reason") for r in rows if not r["trusted"] and r.get("untrusted_reason")}
    lines += [f"untrusted: {stage}: {reason}" for stage, reason in why.items()]
    return "\n".join(lines)
