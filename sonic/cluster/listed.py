"""``sonic cluster up --cluster FILE`` for VMs the user lists by hand (real VMs, or anything
reachable over SSH): bootstrap an agent on every VM, or on none.

The cluster file is the user's own description and stays theirs: ``up`` only appends a
``secret_file:`` line when the file names none (the path of a fresh per-cluster secret kept
next to it, mode 0600; the secret itself never enters the file). S3 credentials come from
boto3's normal chain: on the VMs their own (an instance profile on EC2), unless
``remote_storage.forward_credentials`` asks to hand the driver's to the agents' environment.

All VMs start or none stays started: when some VM fails, each failure is reported in one line
and the agents that did come up are stopped again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sonic.cluster import bootstrap
from sonic.cluster.codebundle import build_bundle
from sonic.cluster.readiness import AgentProgram, make_secret
from sonic.cluster.spec import ClusterSpec, load_cluster
from sonic.errors import ClusterFileError, SonicError, TransportError

Echo = Callable[[str], None]
#: Interpreter started on a listed VM without a ``python:`` key.
DEFAULT_REMOTE_PYTHON = "python3"


def secret_path_for(cluster_file: Path) -> Path:
    return cluster_file.resolve().with_name(f"{cluster_file.stem}.secret")


def _ensure_secret_file(spec: ClusterSpec, cluster_file: Path) -> Path:
    """The secret's path from the file, or a new one appended to the file as one line (the
    rest of the user's file, comments included, is left untouched)."""
    if spec.secret_file:
        return Path(spec.secret_file).expanduser()
    path = secret_path_for(cluster_file)
    text = cluster_file.read_text()
    if text and not text.endswith("\n"):
        text += "\n"
    cluster_file.write_text(f"{text}secret_file: {path}   # written by `sonic cluster up`; the secret is not in this file\n")
    spec.secret_file = str(path)
    return path


def _forwarded_credentials() -> dict[str, str]:
    import boto3

    creds = boto3.Session().get_credentials()
    if creds is None:
        raise ClusterFileError(
            "remote_storage.forward_credentials is true but boto3 finds no credentials here; configure them "
            "(aws configure, AWS_* variables) or set forward_credentials: false and give the VMs their own"
        )
    frozen = creds.get_frozen_credentials()
    env = {"AWS_ACCESS_KEY_ID": frozen.access_key, "AWS_SECRET_ACCESS_KEY": frozen.secret_key}
    if frozen.token:
        env["AWS_SESSION_TOKEN"] = frozen.token
    return env


def up_listed(
    cluster_file: Path,
    *,
    program: AgentProgram,
    echo: Echo,
    max_workers: int = bootstrap.DEFAULT_MAX_WORKERS,
    ssh_config_path: Path | None = bootstrap.DEFAULT_SSH_CONFIG,
    cache_dir: Path | None = None,
) -> ClusterSpec:
    """Bootstrap ``program`` (the real agent: :func:`sonic.runtime.program.real_agent_program`
    with :data:`DEFAULT_REMOTE_PYTHON`) on every VM of ``cluster_file``; all or nothing."""
    cluster_file = Path(cluster_file)
    spec = load_cluster(cluster_file)
    if spec.local is not None:
        raise ClusterFileError(
            f"{cluster_file} describes a local cluster made by `sonic cluster up --local`; bring that up with --local N"
        )
    secret = make_secret(_ensure_secret_file(spec, cluster_file))
    for vm in spec.vms:
        vm.python = vm.python or DEFAULT_REMOTE_PYTHON
    rs = spec.remote_storage
    bundle = build_bundle(cache_dir or cluster_file.resolve().parent / "code-cache")
    launch = bootstrap.AgentLaunch(
        program=program, secret=secret, bundle=bundle,
        s3_endpoint=rs.endpoint_url, s3_bucket=rs.bucket, s3_region=rs.region,
        env=_forwarded_credentials() if rs.forward_credentials else {}, check_python=True,
    )
    echo(f"bootstrapping {len(spec.vms)} VMs ({max_workers} at a time), code {bundle.digest}")

    def progress(name: str, info: Any, error: SonicError | None) -> None:
        vm = spec.vm(name)
        if error is None:
            echo(f"  {name:8s} {vm.host}: agent up on port {info['port']} (pid {info['pid']})")
        else:
            echo(f"  {name:8s} {vm.host}: FAILED: {error}")

    try:
        infos = bootstrap.deploy_all(spec.vms, launch, max_workers=max_workers, ssh_config_path=ssh_config_path,
                                     on_done=progress)
    except bootstrap.BootstrapError as exc:
        started = [spec.vm(name) for name in exc.done]
        if started:
            echo(f"stopping the {len(started)} agent(s) that did start, so nothing is left half-up")
            try:
                bootstrap.stop_all(started, max_workers=max_workers, ssh_config_path=ssh_config_path)
            except TransportError as cleanup:
                exc.add_note(f"stopping them failed too: {cleanup}")
        raise TransportError(
            f"cluster up failed on {len(exc.failures)} of {len(spec.vms)} VMs ({', '.join(exc.failures)}); "
            "fix the lines marked FAILED above and run it again"
        ) from exc
    except BaseException as exc:  # Ctrl-C, or a failure that is not a per-VM error: undo everything
        echo("cluster up interrupted: stopping whatever agents it started")
        try:
            bootstrap.stop_all(spec.vms, max_workers=max_workers, ssh_config_path=ssh_config_path)
        except TransportError as cleanup:
            exc.add_note(f"stopping the agents failed on some VMs: {cleanup}")
        raise
    for vm in spec.vms:
        if int(infos[vm.name]["port"]) != vm.agent_port:
            raise TransportError(f"agent on VM {vm.name} listens on {infos[vm.name]['port']}, not agent_port {vm.agent_port}")
    return spec


def down_listed(cluster_file: Path, *, echo: Echo, max_workers: int = bootstrap.DEFAULT_MAX_WORKERS,
                ssh_config_path: Path | None = bootstrap.DEFAULT_SSH_CONFIG) -> None:
    """Stop every listed VM's agent and delete its data directory (code, objects, secret);
    the cluster file stays (it is the user's), the local secret file is removed."""
    spec = load_cluster(cluster_file)

    def progress(name: str, stopped: Any, error: SonicError | None) -> None:
        state = f"FAILED: {error}" if error else ("agent stopped" if stopped else "no agent was running")
        echo(f"  {name:8s} {spec.vm(name).host}: {state}")

    bootstrap.stop_all(spec.vms, max_workers=max_workers, ssh_config_path=ssh_config_path, on_done=progress)
    if spec.secret_file:
        Path(spec.secret_file).expanduser().unlink(missing_ok=True)
