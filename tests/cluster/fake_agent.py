"""Stand-in for ``python -m sonic.runtime.agent`` that honours the same start-up contract.

It parses the agent's options, listens on --bind/--port (0 = free port), atomically writes
DATA_DIR/agent.json = {name, pid, host, port, version, started} once listening, logs to
DATA_DIR/agent.log and exits cleanly on SIGTERM (stopping its "worker" child, if any).

Health check protocol (test-only): the client sends ``PING <secret hex>\\n``; the agent answers
one JSON line: {"version": ..., "name": ...} or {"error": "auth"}.

Extra options for tests: --fake-version V (report another version), --worker (start a child
process in the agent's session, to check teardown stops orphans), --crash (exit at once).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


def fake_ping(host: str, port: int, secret: bytes, peer_name: str, timeout_s: float) -> dict[str, Any]:
    from sonic.errors import AuthenticationError, TransportError

    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(f"PING {secret.hex()}\n".encode())
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError as exc:
        raise TransportError(f"agent {peer_name} at {host}:{port}: {exc}") from None
    try:
        answer = json.loads(data)
    except ValueError:
        raise TransportError(f"agent {peer_name} at {host}:{port} answered garbage: {data[:80]!r}") from None
    if answer.get("error") == "auth":
        raise AuthenticationError(f"agent {peer_name} at {host}:{port} refused our secret")
    return dict(answer)


def main() -> int:
    p = argparse.ArgumentParser()
    for opt in ("--name", "--bind", "--data-dir", "--secret-file"):
        p.add_argument(opt, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--slots", type=int, required=True)
    p.add_argument("--memory-mb", type=int, required=True)
    p.add_argument("--s3-endpoint")
    p.add_argument("--s3-bucket")
    p.add_argument("--s3-region")
    p.add_argument("--fake-version")
    p.add_argument("--worker", action="store_true")
    p.add_argument("--crash", action="store_true")
    args = p.parse_args()

    import sonic

    data = Path(args.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    log = open(data / "agent.log", "a", buffering=1)
    if args.crash:
        print("fake agent: asked to crash", file=sys.stderr)
        return 3
    secret = Path(args.secret_file).read_text().strip()
    version = args.fake_version or sonic.__version__
    srv = socket.create_server((args.bind, args.port))
    port = srv.getsockname()[1]
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]) if args.worker else None
    stop = threading.Event()

    def on_term(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    info = {"name": args.name, "pid": os.getpid(), "host": args.bind, "port": port, "version": version,
            "started": time.time(), "sonic_file": sonic.__file__,
            "s3": [args.s3_endpoint, args.s3_bucket, args.s3_region], "slots": args.slots,
            "memory_mb": args.memory_mb, "worker_pid": worker.pid if worker else None,
            "aws_key": os.environ.get("AWS_ACCESS_KEY_ID")}
    tmp = data / "agent.json.tmp"
    tmp.write_text(json.dumps(info))
    os.replace(tmp, data / "agent.json")
    log.write(f"listening on {args.bind}:{port}\n")
    srv.settimeout(0.1)
    while not stop.is_set():
        try:
            conn, _ = srv.accept()
        except TimeoutError:
            continue
        except OSError:
            break
        with conn:
            conn.settimeout(2)
            try:
                line = conn.makefile("rb").readline().decode().split()
            except OSError:
                continue
            if len(line) == 2 and line[0] == "PING" and line[1] == secret:
                reply = {"version": version, "name": args.name}
            else:
                reply = {"error": "auth"}
            try:
                conn.sendall((json.dumps(reply) + "\n").encode())
            except OSError:
                continue
    if worker is not None:
        worker.terminate()
        worker.wait(5)
    log.write("stopped\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
