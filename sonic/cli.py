"""The ``sonic`` command line (verbs of DESIGN.md section 8).

Every error reaches the user as one line on stderr: exit code 2 for bad input
(:class:`sonic.errors.UserInputError`, click usage errors), 1 for runtime failures. Set
``SONIC_DEBUG=1`` to see tracebacks. Heavy modules are imported inside the verbs so that
``sonic --help`` stays fast.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from sonic import __version__
from sonic.errors import SonicError, UserInputError
from sonic.plan import OBJECTIVES, STRATEGIES
from sonic.progress import InstanceProgress, note, progress_mode

F = TypeVar("F", bound=Callable[..., Any])

#: The environment variable naming the cluster file, honoured by every verb with --cluster.
CLUSTER_ENV = "SONIC_CLUSTER"
DEFAULT_CLUSTER_FILE = ".sonic/cluster.yaml"

# Shared options: each is defined once here and applied as a decorator, so a flag means the same
# thing (name, type, help, environment variable) on every verb that takes it.


def cluster_option(fn: F) -> F:
    """``--cluster`` of every verb that talks to a cluster."""
    return click.option(
        "--cluster", "cluster_path", type=click.Path(dir_okay=False, path_type=Path),
        default=lambda: os.environ.get(CLUSTER_ENV, DEFAULT_CLUSTER_FILE), show_default=DEFAULT_CLUSTER_FILE,
        help=f"Cluster file (env {CLUSTER_ENV}).",
    )(fn)


def root_option(fn: F) -> F:
    """``--root``: where profiles, models and measured runs live."""
    return click.option(
        "--root", type=click.Path(file_okay=False, path_type=Path), default=None,
        help="Store of profiles, models and measured runs [env SONIC_HOME; default: the nearest "
             "existing .sonic directory upwards from here, else ./.sonic].",
    )(fn)


def json_option(fn: F) -> F:
    """``--json``: the verb's result as one JSON document on stdout, and no progress."""
    return click.option("--json", "as_json", is_flag=True,
                        help="Print the result as one JSON document on stdout (no progress output).")(fn)


def objective_option(fn: F) -> F:
    """``--objective``, its choices from :data:`sonic.plan.OBJECTIVES`."""
    return click.option("--objective", type=click.Choice(OBJECTIVES), default=OBJECTIVES[0], show_default=True,
                        help="What the plan minimises (perf-per-dollar = 1 / (latency x cost)).")(fn)


def strategy_option(*, default: str | None, help: str) -> Callable[[F], F]:
    """``--strategy``, its choices from :data:`sonic.plan.STRATEGIES`."""
    def decorate(fn: F) -> F:
        return click.option("--strategy", type=click.Choice(STRATEGIES), default=default,
                            show_default=default is not None, help=help)(fn)
    return decorate


def resolved_root(root: Path | None) -> Path:
    from sonic.home import store_root

    return store_root(root)


class FiniteFloat(click.FloatRange):
    """A float range that also refuses nan and inf (click's FloatRange lets both through)."""

    name = "finite float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if number is not None and not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def emit_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sonic")
def cli() -> None:
    """Sonic: choose per DAG edge how intermediate data travels (VM disk, direct, S3)."""


# ---------------------------------------------------------------------------- workloads
@cli.group()
def workloads() -> None:
    """Built-in workloads: list them, generate inputs."""


@workloads.command("list")
def workloads_list() -> None:
    """List the built-in workloads and their stages."""
    from sonic.app import BUILTIN_WORKLOADS, load_app

    for name in BUILTIN_WORKLOADS:
        app = load_app(name)
        chain = ", ".join(f"{e.src} -{e.pattern.value}-> {e.dst}" for e in app.edges())
        click.echo(f"{name:10s} {chain}")


@workloads.command("gen")
@click.argument("app_spec", metavar="APP")
@click.option("--size", required=True, help="Approximate input size, e.g. 50MB.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="File to write.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the generator (same seed, same bytes).")
def workloads_gen(app_spec: str, size: str, output: Path, seed: int) -> None:
    """Write a generated input of about SIZE bytes for APP."""
    from sonic.app import load_app
    from sonic.inputs import generate_input

    app = load_app(app_spec)
    path = generate_input(app, output, size, seed=seed)
    click.echo(f"wrote {path} ({path.stat().st_size} bytes)")


# ---------------------------------------------------------------------------- run
@cli.command()
@click.argument("app_spec", metavar="APP")
@click.option("--input", "input_path", required=True, type=click.Path(path_type=Path), help="Input file or directory.")
@click.option("--local-reference", is_flag=True, help="Run in one process with the reference executor.")
@click.option("--plan", "plan_path", type=click.Path(dir_okay=False, path_type=Path), help="Plan JSON to execute.")
@strategy_option(default=None, help="Plan with this strategy instead of a plan file [default: sonic].")
@objective_option
@click.option("-o", "--keep", "keep", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Collect the final outputs into this new or empty directory (any executor).")
@json_option
@click.option("--no-learn", is_flag=True, help="Do not record this run or refit the models from it.")
@click.option("--replan-threshold", type=click.FloatRange(min=0, min_open=True, max=1000), default=0.5,
              show_default=True, help="Re-plan the rest of the job when a finished stage's output bytes or a "
              "consumer's fanout is off its prediction by more than this (0.5 = 1.5x either way).")
@click.option("--no-replan", is_flag=True, help="Never re-plan mid-job.")
@click.option("--stage-timeout", "stage_timeout_s", type=FiniteFloat(min=0, min_open=True, max=7 * 86400),
              default=None, help="Seconds any stage instance may run before it is killed (overrides every stage's "
              "timeout_s; default: the stage's own, else 900).")
@click.option("--lease", "lease_s", type=FiniteFloat(min=1, max=86400), default=None,
              help="Job lease in seconds: the agents drop the job's work and data if this coordinator stops "
              "renewing it for this long (default 120).")
@click.option("--resume", "resume", default=None, metavar="JOB",
              help="Finish job JOB whose `sonic run` crashed, re-running only what its journal does not list as done.")
@root_option
@cluster_option
def run(app_spec: str, input_path: Path, local_reference: bool, plan_path: Path | None, strategy: str | None,
        objective: str, keep: Path | None, as_json: bool, no_learn: bool, replan_threshold: float,
        no_replan: bool, stage_timeout_s: float | None, lease_s: float | None, resume: str | None,
        root: Path | None, cluster_path: Path) -> None:
    """Run APP on an input (reference executor, or a cluster with a plan)."""
    from sonic.app import load_app
    from sonic.outputs import describe, output_target

    app = load_app(app_spec)
    if local_reference and (plan_path or strategy):
        raise UserInputError("--local-reference runs everything in one process; drop --plan/--strategy")
    if resume is not None and (local_reference or plan_path or strategy):
        raise UserInputError("--resume runs the plan of the crashed job again; drop --plan/--strategy/--local-reference")
    if resume is not None and not re.fullmatch(r"[0-9a-f]{16}", resume):
        raise UserInputError(f"--resume {resume!r} is not a job id (16 hex digits, as in ROOT/jobs/JOB.jsonl)")
    with output_target(keep) as target:  # final outputs land here (a temporary dir without -o)
        if local_reference:
            result = _run_reference(app, input_path, target.directory, as_json)
        else:
            from sonic.workflows.session import run_on_cluster

            result = run_on_cluster(app, input_path, cluster_path=cluster_path, plan_path=plan_path,
                                    strategy=strategy, objective=objective, app_spec=app_spec,
                                    progress=progress_mode(as_json), echo=click.echo, root=resolved_root(root),
                                    learn=not no_learn, output_dir=target.directory,
                                    replan_threshold=None if no_replan else replan_threshold,
                                    stage_timeout_s=stage_timeout_s, lease_s=lease_s, resume=resume)
        if as_json:
            emit_json(result.to_json())
        else:
            _print_run(result)
            for line in describe(result.outputs, target):
                click.echo(line)
    if not result.output_ok:
        raise SonicError(f"output of {app.name} failed validation: {result.output_detail}")


def _run_reference(app: Any, input_path: Path, target: Path, as_json: bool) -> Any:
    from sonic.outputs import collect_reference_outputs
    from sonic.reference import ReferenceExecutor

    mode = progress_mode(as_json)
    executor = ReferenceExecutor(app, progress=InstanceProgress(mode) if mode.shows else None)
    try:
        result = executor.run(input_path)
        result.outputs = [str(p) for p in collect_reference_outputs(result.outputs, executor.workdir, target)]
        return result
    finally:
        executor.cleanup()


def _print_run(result: Any) -> None:
    click.echo(f"{result.app} ({result.strategy}): {result.latency_s:.2f} s, "
               f"output {'ok' if result.output_ok else 'FAILED'} ({result.output_detail})")
    for s in result.stages:
        click.echo(f"  stage {s.name:12s} {s.instances:4d} instances {s.seconds:8.2f} s  peak {s.peak_memory_mb:7.1f} MB")
    for e in result.edges:
        click.echo(f"  edge  {e.src + ' -> ' + e.dst:24s} {e.method:7s} {e.bytes:12d} B {e.seconds:8.2f} s  "
                   f"{e.objects_stored:6d} objects stored")
    if result.s3_requests:
        click.echo(f"  S3 requests: {result.s3_requests.get('put', 0)} PUT, {result.s3_requests.get('get', 0)} GET")
    if result.predicted_vs_actual:
        from sonic.comparison import render

        for line in render(result.predicted_vs_actual):
            click.echo(line)


# ---------------------------------------------------------------------------- cluster
@cli.group()
def cluster() -> None:
    """Start, inspect, calibrate and stop a cluster."""


@cluster.command("up")
@click.option("--local", "n", type=click.IntRange(1, 32), default=None,
              help="Number of local VMs to emulate. Without it, bootstrap the VMs listed in the --cluster file.")
@click.option("--mode", type=click.Choice(["loopback", "ssh", "netns"]), default=None,
              help="Local cluster mode [default: loopback].")
@click.option("--vm-mbps", type=FiniteFloat(min=1, max=1e7), default=None, help="Rate limit of each VM link (netns).")
@click.option("--s3-mbps", type=FiniteFloat(min=1, max=1e7), default=None, help="Rate limit of the S3 link (netns).")
@click.option("--s3-latency-ms", type=FiniteFloat(min=0, max=60000), default=None, help="Added S3 per-request latency.")
@click.option("--vm-cores", type=click.IntRange(1, 1024), default=None,
              help="Cores each emulated VM claims [default: the host's cores shared out over the VMs, at least 1].")
@click.option("--vm-cpus", type=FiniteFloat(min=0.01, max=1024), default=None,
              help="CPU limit of each VM in cores, e.g. 0.25 (netns, root: a cgroup per VM).")
@click.option("--vm-memory-mb", type=click.IntRange(64, 16 * 1024 * 1024), default=None,
              help="Memory limit of each VM in MB (netns, root: a cgroup per VM).")
@cluster_option
def cluster_up(n: int | None, mode: str | None, vm_mbps: float | None, s3_mbps: float | None,
               s3_latency_ms: float | None, vm_cores: int | None, vm_cpus: float | None, vm_memory_mb: int | None,
               cluster_path: Path) -> None:
    """Start an emulated cluster of N VMs here (--local N), or agents on the VMs a cluster file lists."""
    from sonic.workflows import cluster_commands as commands

    if n is None:
        given = [flag for flag, value in (("--mode", mode), ("--vm-mbps", vm_mbps), ("--s3-mbps", s3_mbps),
                                          ("--s3-latency-ms", s3_latency_ms), ("--vm-cores", vm_cores),
                                          ("--vm-cpus", vm_cpus), ("--vm-memory-mb", vm_memory_mb))
                 if value is not None]
        if given:
            raise UserInputError(f"{given[0]} applies to local clusters only; add --local N or drop it")
        if not cluster_path.exists():
            raise UserInputError(f"no cluster file at {cluster_path}: list your VMs in one (see docs/own-vms.md) "
                                 "and pass --cluster FILE, or start a local cluster with --local N")
        listed = commands.up_listed(cluster_path, echo=click.echo)
        click.echo(f"cluster of {len(listed.vms)} VMs is up; cluster file: {cluster_path}")
        return
    mode = mode or "loopback"
    spec = commands.up(n, mode, cluster_path, vm_mbps, s3_mbps, s3_latency_ms, cores_per_vm=vm_cores,
                       vm_cpus=vm_cpus, vm_memory_mb=vm_memory_mb)
    click.echo(f"cluster of {len(spec.vms)} VMs ({mode}, {spec.vms[0].cores} core(s) each) is up; "
               f"cluster file: {cluster_path}")


@cluster.command("status")
@json_option
@cluster_option
def cluster_status(as_json: bool, cluster_path: Path) -> None:
    """Show every VM's agent state."""
    from sonic.workflows import cluster_commands as commands

    rows = commands.status(cluster_path)
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        pid = f" pid {row['pid']}" if row.get("pid") else ""
        click.echo(f"{row['name']:8s} {row['host']}:{row['port']:<6} {row['state']}{pid}")


@cluster.command("calibrate")
@json_option
@cluster_option
def cluster_calibrate(as_json: bool, cluster_path: Path) -> None:
    """Measure bandwidths and latencies and store them in the cluster file."""
    from sonic.runtime.calibrate import calibrate_cluster

    calibration = calibrate_cluster(cluster_path, progress=progress_mode(as_json).shows, echo=note)
    if as_json:
        emit_json(calibration)
    else:
        for key, value in calibration.items():
            click.echo(f"{key:20s} {value}")


@cluster.command("gc")
@json_option
@cluster_option
def cluster_gc(as_json: bool, cluster_path: Path) -> None:
    """Remove the objects (VM disks and bucket) of every job that no longer exists."""
    from sonic.runtime.gc import collect_garbage

    report = collect_garbage(cluster_path)
    if as_json:
        emit_json(report)
        return
    for name, row in report["agents"].items():
        click.echo(f"{name:8s} " + (f"removed {len(row['removed'])} job(s), kept {len(row['kept'])}"
                                    if "error" not in row else f"not reached: {row['error']}"))
    bucket = report["bucket"]
    click.echo(f"bucket   removed {len(bucket['removed'])} job prefix(es)"
               + (f" (skipped: {bucket['skipped']})" if bucket["skipped"] else ""))


@cluster.command("down")
@cluster_option
def cluster_down(cluster_path: Path) -> None:
    """Stop the agents and everything the harness started; remove the secret."""
    from sonic.workflows import cluster_commands as commands

    if not cluster_path.exists():  # a mistyped path must not be reported as "cluster is down"
        raise UserInputError(f"no cluster file at {cluster_path}: nothing to stop; pass the --cluster file that "
                             "`sonic cluster up` wrote (a cluster already brought down has none)")

    commands.down(cluster_path, echo=click.echo)
    click.echo("cluster is down")


# ---------------------------------------------------------------------------- profile / models / plan
@cli.command()
@click.argument("app_spec", metavar="APP")
@click.option("--sizes", default=None,
              help="Comma-separated input sizes [default: the workload's recommended doubling sweep, else 2MB..32MB].")
@click.option("--runs", type=click.IntRange(1, 100), default=4, show_default=True, help="Runs per size.")
@click.option("--inputs", "sample_inputs", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Profile on your own sample inputs (files, or a directory of them; repeatable) "
                   "instead of generated ones. Give inputs of at least 3 different sizes.")
@root_option
# Not cluster_option: without a cluster file (no --cluster, no SONIC_CLUSTER) profiling runs here, on the
# reference executor, rather than failing on a missing .sonic/cluster.yaml.
@click.option("--cluster", "cluster_path", type=click.Path(dir_okay=False, path_type=Path),
              default=lambda: os.environ.get(CLUSTER_ENV), show_default=f"env {CLUSTER_ENV}, else none",
              help="Profile on this cluster instead of the reference executor (env SONIC_CLUSTER).")
@click.option("--local-reference", is_flag=True,
              help="Profile in this process with the reference executor even if SONIC_CLUSTER names a cluster.")
def profile(app_spec: str, sizes: str | None, runs: int, sample_inputs: tuple[Path, ...], root: Path | None,
            cluster_path: Path | None, local_reference: bool) -> None:
    """Profile APP over a size sweep (or your sample inputs) and fit its parameter models."""
    from sonic.sizes import parse_size_list
    from sonic.workflows.profiling import run_profile

    if sample_inputs and sizes:
        raise UserInputError("give either --sizes (generated inputs) or --inputs (your samples), not both")
    run_profile(app_spec, parse_size_list(sizes) if sizes else None, runs, resolved_root(root),
                cluster=None if local_reference else cluster_path, echo=click.echo,
                progress=progress_mode().shows, sample_inputs=list(sample_inputs) or None)


@cli.command()
@click.argument("app_spec", metavar="APP")
@root_option
@json_option
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write a PNG of the fits.")
def models(app_spec: str, root: Path | None, as_json: bool, plot: Path | None) -> None:
    """Show per stage and metric: model form, samples and held-out MAPE."""
    from models.cli import show_models

    show_models(app_spec, resolved_root(root), as_json, plot, echo=click.echo)


@cli.command()
@click.argument("app_spec", metavar="APP")
@click.option("--input", "input_path", type=click.Path(exists=True, path_type=Path), default=None,
              help="Plan for this input file or directory (its size and features).")
@click.option("--input-size", default=None, help="Plan for an input of this size, e.g. 64MB.")
@objective_option
@click.option("--budget", type=FiniteFloat(min=0), default=None, help="Max dollars per run.")
@click.option("--deadline", type=FiniteFloat(min=0), default=None, help="Max seconds per run.")
@strategy_option(default="sonic", help="sonic (the optimiser), a fixed method (remote, vm, direct) or oracle "
                                        "(the optimiser fed with this input's measured parameters).")
@root_option
@json_option
@click.option("--dot", is_flag=True, help="Print a Graphviz DOT of the DAG with methods.")
@cluster_option
def plan(app_spec: str, input_path: Path | None, input_size: str | None, objective: str, budget: float | None,
         deadline: float | None, strategy: str, root: Path | None, as_json: bool, dot: bool,
         cluster_path: Path) -> None:
    """Plan per-edge passing and placement for APP."""
    from sonic.workflows.planning import plan_command

    plan_command(app_spec, input_path=input_path, input_size=input_size, objective=objective, budget=budget,
                 deadline=deadline, strategy=strategy, root=resolved_root(root), as_json=as_json, dot=dot,
                 cluster_path=cluster_path, echo=click.echo)


# ---------------------------------------------------------------------------- demo / bench
@cli.command()
@json_option
def demo(as_json: bool) -> None:
    """Local cluster, profile, plan, run Sonic vs all-remote, report, tear down."""
    from sonic.workflows.demo import run_demo

    summary = run_demo(progress=not as_json, echo=click.echo)
    if as_json:
        emit_json(summary)


@cli.group()
def bench() -> None:
    """Benchmarks with a yardstick measured in the same run."""


#: Object sizes of `sonic bench dataplane`: small (latency-bound) to large (bandwidth-bound).
DATAPLANE_OBJECT_SIZES = "1MB,64MB,512MB"


@bench.command("dataplane")
@json_option
@click.option("--object-sizes", default=None, metavar="SIZES",
              help="Comma-separated sizes of the objects moved between two VMs [default: 1MB,64MB,512MB].")
# `--sizes` was this option's name; it now means only `sonic profile`'s application input sizes.
@click.option("--sizes", "deprecated_sizes", default=None, hidden=True)
@cluster_option
def bench_dataplane(as_json: bool, object_sizes: str | None, deprecated_sizes: str | None,
                    cluster_path: Path) -> None:
    """Throughput of each passing method next to raw TCP, disk and boto3 alone."""
    from sonic.runtime.bench import format_dataplane_table, run_dataplane_bench
    from sonic.sizes import parse_size_list

    if deprecated_sizes is not None:
        if object_sizes is not None:
            raise UserInputError("give --object-sizes only (--sizes is its deprecated name)")
        note("warning: `bench dataplane --sizes` is deprecated; use --object-sizes")
        object_sizes = deprecated_sizes
    report = run_dataplane_bench(cluster_path, parse_size_list(object_sizes or DATAPLANE_OBJECT_SIZES),
                                 progress=progress_mode(as_json).shows, echo=note)
    if as_json:
        emit_json(report)
    else:
        # The results table goes to stdout whether or not it is a terminal (`> out.txt` works).
        click.echo(format_dataplane_table(report))


# ---------------------------------------------------------------------------- entry point
def main(argv: list[str] | None = None) -> None:
    """Console entry point: one line per error, exit 2 for bad input and 1 for failures."""
    debug = bool(os.environ.get("SONIC_DEBUG"))
    try:
        code = cli.main(args=argv, prog_name="sonic", standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()} (see `sonic --help`)", err=True)
        sys.exit(2)
    except SonicError as exc:
        if debug:
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except ModuleNotFoundError as exc:
        if debug:
            raise
        missing = exc.name or str(exc)
        click.echo(f"error: missing dependency {missing}; reinstall with `pip install -e .`", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, not a traceback
        if debug:
            raise
        click.echo(f"internal error: {type(exc).__name__}: {exc} (rerun with SONIC_DEBUG=1 for a traceback)",
                   err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
