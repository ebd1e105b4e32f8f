"""Send the user's app code to every agent before a job (see :mod:`sonic.runtime.appcode`).

One ``app_install`` round trip per agent asks whether that content hash is installed; only an
agent that lacks it receives the archive. The versioned spec returned here is what the job's
requests carry, so agents start (and keep warm) workers of exactly this version.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sonic.app import App
from sonic.errors import SonicError
from sonic.runtime.appcode import AppCodeError, build_app_bundle
from sonic.runtime.client import AgentClient

logger = logging.getLogger("sonic.appship")


@dataclass(frozen=True)
class ShipResult:
    app_spec: str                 # what to send to agents (versioned when code was shipped)
    digest: str | None
    sent_to: tuple[str, ...]      # agents that received the archive (the others had it)


def ship_app(clients: Mapping[str, AgentClient], app: App, app_spec: str,
             exclude: Collection[str] = ()) -> ShipResult:
    """Make ``app_spec``'s current code present on every agent not in ``exclude``."""
    bundle = build_app_bundle(app_spec, app)
    if bundle is None:
        return ShipResult(app_spec, None, ())
    targets = {name: client for name, client in clients.items() if name not in exclude}

    def install(name: str, client: AgentClient) -> tuple[str, bool, str]:
        reply = client.app_install(app_spec, bundle.digest)
        sent = False
        if reply.missing:
            reply = client.app_install(app_spec, bundle.digest, bundle.archive)
            sent = True
        return name, sent, reply.python

    errors: dict[str, str] = {}
    sent_to: list[str] = []
    versions: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(targets))), thread_name_prefix="sonic-ship") as pool:
        futures = {name: pool.submit(install, name, client) for name, client in targets.items()}
        for name, future in futures.items():
            try:
                _, sent, python = future.result()
            except SonicError as exc:
                errors[name] = str(exc)
                continue
            versions[name] = python
            if sent:
                sent_to.append(name)
    if errors:
        first = next(iter(errors))
        raise AppCodeError(
            f"installing the code of app {app_spec} failed on {len(errors)} of {len(targets)} VMs "
            f"({', '.join(errors)}); {first}: {errors[first]}"
        )
    _check_python(versions, app_spec)
    if sent_to:
        logger.info("app %s: code %s sent to %s", app_spec, bundle.digest, ", ".join(sent_to))
    return ShipResult(bundle.versioned_spec, bundle.digest, tuple(sent_to))


def _check_python(versions: Mapping[str, str], app_spec: str) -> None:
    """Source code travels, not bytecode, so another minor version usually works; say so
    once, because an app using new syntax or stdlib APIs would then fail on the VMs only."""
    here = ".".join(platform.python_version_tuple()[:2])
    other = {name: v for name, v in versions.items() if v and ".".join(v.split(".")[:2]) != here}
    if other:
        shown = ", ".join(f"{name} {v}" for name, v in sorted(other.items()))
        logger.warning("app %s runs on Python %s here but %s on the VMs; make sure it works on both", app_spec,
                       here, shown)
