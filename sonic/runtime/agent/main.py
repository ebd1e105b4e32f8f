"""The agent's command line: ``python -m sonic.runtime.agent --name vm0 --bind ADDR ...``
(the emulation harness and the SSH bootstrap start agents with it; see
:mod:`sonic.runtime.agent`)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from pathlib import Path

from sonic.errors import SonicError, UserInputError
from sonic.runtime import protocol
from sonic.runtime.agent.config import AgentConfig
from sonic.runtime.agent.server import serve
from sonic.runtime.remote import RemoteSettings


def parse_args(argv: list[str] | None = None) -> AgentConfig:
    parser = argparse.ArgumentParser(prog="python -m sonic.runtime.agent")
    parser.add_argument("--name", required=True)
    parser.add_argument("--bind", required=True, help="cluster interface address (never 0.0.0.0 by default)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--secret-file", required=True)
    parser.add_argument("--slots", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--memory-mb", type=int, default=4096)
    parser.add_argument("--s3-endpoint", default=None)
    parser.add_argument("--s3-bucket", default=None)
    parser.add_argument("--s3-region", default="us-east-1")
    parser.add_argument("--worker-start-timeout", type=float, default=120.0)
    parser.add_argument("--handshake-timeout", type=float, default=10.0,
                        help="seconds an unauthenticated peer may take to complete the handshake")
    parser.add_argument("--verify-local", choices=("always", "changed"), default="always",
                        help="hash VM-Storage inputs before every use (always) or only when modified since "
                             "their last verification (changed)")
    parser.add_argument("--idle-worker-timeout", type=float, default=300.0,
                        help="seconds an idle warm worker is kept before it is stopped")
    parser.add_argument("--max-idle-workers", type=int, default=0,
                        help="idle warm workers kept on this VM (default: twice --slots)")
    parser.add_argument("--allow-any-interface", action="store_true",
                        help="allow --bind 0.0.0.0 / :: (exposes the agent on every interface)")
    args = parser.parse_args(argv)
    if args.slots < 1:
        parser.error("--slots must be at least 1")
    if not 0 < args.idle_worker_timeout < 1e7 or args.max_idle_workers < 0:
        parser.error("--idle-worker-timeout must be positive and --max-idle-workers non-negative")
    check_bind(args.bind, args.allow_any_interface)
    remote = RemoteSettings(args.s3_bucket, args.s3_endpoint, args.s3_region) if args.s3_bucket else None
    return AgentConfig(args.name, args.bind, args.port, args.data_dir, protocol.read_secret(args.secret_file),
                       args.slots, args.memory_mb, remote, args.worker_start_timeout, args.handshake_timeout,
                       args.verify_local, idle_worker_s=args.idle_worker_timeout,
                       max_idle_workers=args.max_idle_workers)


def check_bind(bind: str, allow_any: bool = False) -> None:
    """The agent listens on the cluster interface only; a wildcard needs an explicit opt-in."""
    try:
        wildcard = ipaddress.ip_address(bind).is_unspecified
    except ValueError:
        wildcard = bind in ("", "*")
    if wildcard and not allow_any:
        raise UserInputError(
            f"--bind {bind or repr(bind)} would expose the agent on every interface; bind the cluster interface's "
            "address (or pass --allow-any-interface deliberately)"
        )


def main(argv: list[str] | None = None) -> None:
    try:
        config = parse_args(argv)
    except SonicError as exc:
        sys.exit(f"error: {exc}")
    config.data_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(filename=config.data_dir / "agent.log", level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(config)
