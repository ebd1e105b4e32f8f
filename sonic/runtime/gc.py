"""``sonic cluster gc``: remove everything of jobs that no longer exist.

A job exists while some agent holds a live lease for it or runs one of its instances. Every
agent deletes the object directories of all other jobs (op ``gc``) and reports the jobs it
keeps; then the bucket's top-level prefixes (one per job) that no agent keeps are deleted.
If an agent does not answer, the bucket is left alone: that agent might hold a live job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sonic.cluster.spec import load_cluster
from sonic.errors import ClusterFileError, SonicError, TransportError
from sonic.runtime.client import AgentClient, Timeouts
from sonic.runtime.protocol import read_secret
from sonic.runtime.remote import RemoteSettings, RemoteStore


def collect_garbage(cluster_path: Path) -> dict[str, Any]:
    cluster = load_cluster(cluster_path)
    if not cluster.secret_file:
        raise ClusterFileError("cluster file has no secret_file; agents cannot be authenticated without one")
    try:
        secret = read_secret(cluster.secret_file)
    except SonicError as exc:
        raise ClusterFileError(str(exc)) from None
    live: set[str] = set()
    agents: dict[str, Any] = {}
    complete = True
    for vm in cluster.vms:
        client = AgentClient(vm.host, vm.agent_port, secret, vm.name, Timeouts(connect_s=5.0, control_s=60.0))
        try:
            reply = client.gc()
            agents[vm.name] = {"removed": reply.removed, "kept": reply.live}
            live.update(reply.live)
        except SonicError as exc:
            agents[vm.name] = {"error": str(exc)}
            complete = False
        finally:
            client.close()
    bucket: dict[str, Any] = {"removed": [], "skipped": None}
    if not complete:
        bucket["skipped"] = "an agent did not answer; it may hold a live job"
    else:
        remote = RemoteStore(RemoteSettings.for_cluster(cluster))
        try:
            for job in _top_level_prefixes(remote):
                if job not in live:
                    remote.delete_prefix(f"{job}/")
                    bucket["removed"].append(job)
        except TransportError as exc:
            bucket["skipped"] = str(exc)
    return {"agents": agents, "bucket": bucket, "live": sorted(live)}


def _top_level_prefixes(remote: RemoteStore) -> list[str]:
    prefixes: list[str] = []
    paginator = remote.client.get_paginator("list_objects_v2")
    try:
        for page in paginator.paginate(Bucket=remote.settings.bucket, Delimiter="/"):
            prefixes.extend(p["Prefix"].rstrip("/") for p in page.get("CommonPrefixes", []))
    except Exception as exc:  # noqa: BLE001 - botocore's many error types: one transport error for the caller
        if "NoSuchBucket" in str(exc):
            return []
        raise TransportError(f"cannot list bucket {remote.settings.bucket}: {exc}") from None
    return prefixes
