"""What the CLI's ``sonic cluster up | status | down`` verbs call (click wiring is in sonic/cli.py).

Each function takes the cluster file path (``--cluster``, default ``.sonic/cluster.yaml``) and
raises only :class:`sonic.errors.SonicError` subclasses, whose one-line messages the CLI prints.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sonic.cluster import listed
from sonic.cluster.spec import DEFAULT_CLUSTER_FILE, ClusterSpec, load_cluster
from sonic.emulation.cgroups import VMLimits
from sonic.emulation.local import HarnessOptions, cluster_down, cluster_status, cluster_up, load_cluster_file
from sonic.runtime.program import real_agent_program


def up(
    n: int,
    mode: str = "loopback",
    cluster_path: Path | str = DEFAULT_CLUSTER_FILE,
    vm_mbps: float | None = None,
    s3_mbps: float | None = None,
    s3_latency_ms: float | None = None,
    *,
    cores_per_vm: int | None = None,
    vm_cpus: float | None = None,
    vm_memory_mb: int | None = None,
    options: HarnessOptions = HarnessOptions(),
) -> ClusterSpec:
    """``sonic cluster up --local N``: start a local cluster and write ``cluster_path``.
    Its working files go next to the cluster file (``<dir>/cluster-<id>/``). ``cores_per_vm``
    defaults to :func:`fair_cores`."""
    path = Path(cluster_path)
    return cluster_up(
        n, mode, root=path.parent, vm_mbps=vm_mbps, s3_mbps=s3_mbps, s3_latency_ms=s3_latency_ms,
        cores_per_vm=cores_per_vm or fair_cores(n), cluster_file=path, options=options,
        limits=VMLimits(vm_cpus, vm_memory_mb),
    )


def fair_cores(n: int) -> int:
    """Cores each of ``n`` emulated VMs claims by default: the host's cores shared out (at
    least 1). Emulated VMs share the host's CPUs; if they claimed more cores than exist, a
    plan that spreads work over VMs would be slower than the planner predicts (it counts one
    core per concurrent instance) and a plan packed on one VM would look worse than it is."""
    return max(1, (os.cpu_count() or 1) // max(1, n))


def up_listed(cluster_path: Path | str, *, echo: Callable[[str], None], options: HarnessOptions = HarnessOptions()
              ) -> ClusterSpec:
    """``sonic cluster up --cluster FILE`` (no --local): bootstrap an agent on every VM the
    file lists, over SSH; all or nothing (see :mod:`sonic.cluster.listed`)."""
    return listed.up_listed(Path(cluster_path), program=real_agent_program(listed.DEFAULT_REMOTE_PYTHON), echo=echo,
                            max_workers=options.ssh_max_workers, ssh_config_path=options.ssh_config_path)


def status(cluster_path: Path | str = DEFAULT_CLUSTER_FILE, **kwargs: Any) -> list[dict[str, Any]]:
    """``sonic cluster status``: one row per VM (name, host, port, state, pid for local)."""
    path = Path(cluster_path)
    spec = load_cluster_file(path)
    if spec is None:
        spec = load_cluster(path)  # raises the standard "no cluster file; start one with ..." message
    return cluster_status(spec, **kwargs)


def down(cluster_path: Path | str = DEFAULT_CLUSTER_FILE, *, options: HarnessOptions = HarnessOptions(),
         echo: Callable[[str], None] | None = None) -> None:
    """``sonic cluster down``: stop everything and remove the secret and agent data.

    Idempotent: no cluster file means nothing to do (the CLI verb refuses a missing file, so a
    mistyped path is not reported as "cluster is down"); a stale file whose processes are gone
    is cleaned without error. For a cluster of real VMs the agents are stopped over SSH and the
    file is kept (it is the user's description of their VMs)."""
    path = Path(cluster_path)
    spec = load_cluster_file(path)
    if spec is None:
        return
    if spec.local is not None:
        cluster_down(spec, path, options=options)
        return
    listed.down_listed(path, echo=echo or (lambda line: None), max_workers=options.ssh_max_workers,
                       ssh_config_path=options.ssh_config_path)
