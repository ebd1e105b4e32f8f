"""``sonic profile APP``: the work behind the verb (``sonic/cli.py`` only wires options)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import click

from profiler.repeat import run_best_of
from profiler.store import ProfileStore
from profiler.sweep import Executor, ProgressEvent, profile_app
from sonic.app import load_app
from sonic.errors import UserInputError
from sonic.progress import note as progress_note
from sonic.reference import input_refs
from sonic.sizes import parse_size_list

Echo = Callable[[str], None]

#: A doubling sweep: the top size is 2x the next, so the held-out MAPE (train on <= 16MB,
#: test on 32MB) measures extrapolation to 2x the largest training size.
DEFAULT_SIZES = "2MB,4MB,8MB,16MB,32MB"
#: Per-workload sweeps (5 sizes x 4 runs = 20 runs). Each starts where the workload's
#: fanout has left its floor (sort and lightgbm cut 4 MB pieces, lightgbm with at least 2
#: shards) so that the smaller sizes already show how counts and per-instance costs grow.
RECOMMENDED_SIZES: dict[str, str] = {
    "sort": "8MB,16MB,32MB,64MB,128MB",
    "lightgbm": "4MB,8MB,16MB,32MB,64MB",
    "video": "4MB,8MB,16MB,32MB,64MB",
}
DEFAULT_RUNS = 4


def run_profile(app_spec: str, sizes: Sequence[int] | str | None = None, runs: int = DEFAULT_RUNS,
                root: Path | str = Path(".sonic"), *, cluster: Path | None = None, echo: Echo = click.echo,
                progress: bool | None = None, seed: int = 0, cold_runs: int = 0,
                sample_inputs: Sequence[Path] | None = None, note: Echo = progress_note) -> dict[str, Any]:
    """Profile ``app_spec`` over ``sizes`` x ``runs``, then fit and save its models.

    ``sizes``: a list of bytes or a string such as ``"8MB,16MB"``; ``None`` picks the
    workload's recommended sweep (:data:`RECOMMENDED_SIZES`) or :data:`DEFAULT_SIZES`.

    Progress lines ("size 4MB run 2/3 ... 12.3s") go to ``note`` (default: stderr) unless
    ``progress`` is false; the summary and the models' table go to ``echo`` (the CLI's
    stdout). Returns a summary with the models' report.
    """
    app = load_app(app_spec)
    samples = samples_by_size(sample_inputs) if sample_inputs else None
    if samples is not None:
        size_list = sorted(samples)
        if len(size_list) < MIN_SAMPLE_SIZES:
            echo(f"warning: your samples have {len(size_list)} distinct size(s); the models trust a stage only "
                 f"once it was profiled on at least {MIN_SAMPLE_SIZES}, so plans stay on Remote-Storage until then")
    else:
        if sizes is None:
            sizes = RECOMMENDED_SIZES.get(app.name, DEFAULT_SIZES)
        size_list = parse_size_list(sizes) if isinstance(sizes, str) else list(sizes)
    root = Path(root)
    show = progress is not False
    store = ProfileStore(root)

    def report(event: ProgressEvent) -> None:
        if event.phase == "done":
            note(event.describe())

    with _executor(cluster, app_spec, root) as executor:
        summary = profile_app(app, size_list, runs, store=store, executor_factory=executor,
                              progress=report if show else None, seed=seed, cold_runs=cold_runs, samples=samples)
    # Imported only now: scikit-learn in the profiler's memory would inflate every
    # instance's measured baseline (instances are forked from this process).
    from models.app_model import AppModel
    from models.cli import format_report
    from models.refit import app_lock

    with app_lock(root, app.name):
        model = AppModel.for_app(app).fit(store.load(app.name))
        models_dir = model.save(root)
    rows = model.report()
    invalid = f", {summary.invalid_outputs} with invalid output" if summary.invalid_outputs else ""
    echo(f"profiled {app.name}: {len(summary.run_ids)} runs{invalid}, {summary.rows} instance rows in "
         f"{summary.seconds:.1f}s -> {store.app_dir(app.name)}; models -> {models_dir}")
    echo(format_report(rows))
    return {"app": app.name, "runs": len(summary.run_ids), "rows": summary.rows, "sizes": summary.sizes,
            "invalid_outputs": summary.invalid_outputs, "profile_dir": str(store.app_dir(app.name)),
            "models_dir": str(models_dir), "report": rows}


#: Distinct sample sizes below which the models cannot trust any stage (AppModel.min_sizes).
MIN_SAMPLE_SIZES = 3


def samples_by_size(paths: Sequence[Path]) -> dict[int, list[Path]]:
    """The user's sample inputs grouped by size in bytes. A directory given is either one
    input (a directory input of the app) if it holds no sub-directories and is passed with
    others, or a folder of inputs, one per entry, if it is the only path given."""
    entries: list[Path] = []
    for path in paths:
        if path.is_dir() and len(paths) == 1:
            entries += sorted(p for p in path.iterdir() if not p.name.startswith("."))
        else:
            entries.append(path)
    if not entries:
        raise UserInputError(f"--inputs {paths[0]} holds no sample inputs; put input files in it")
    groups: dict[int, list[Path]] = {}
    for entry in entries:
        refs, _ = input_refs(entry)
        size = sum(r.size for r in refs)
        if size <= 0:
            raise UserInputError(f"sample input {entry} is empty; give inputs with data")
        groups.setdefault(size, []).append(entry)
    return groups


@contextlib.contextmanager
def _executor(cluster: Path | None, app_spec: str, root: Path) -> Iterator[Executor]:
    if cluster is None:
        yield run_best_of
        return
    # Imported only now, as the models below: the runtime and the models' scikit-learn would
    # inflate the measured baseline of every instance forked from this process.
    from sonic.workflows.cluster_profiling import ClusterExecutor

    with ClusterExecutor(cluster, app_spec, root) as executor:
        yield executor
