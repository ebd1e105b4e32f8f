"""Helpers for tests of hand-listed clusters: a user's app written into a directory outside the
repository, the real ``sonic`` CLI run there without PYTHONPATH, an S3 server of our own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from sonic.emulation.procs import backoff, spawn, stop_pid, tail
from sonic.emulation.s3server import EMBEDDED_S3_CREDENTIALS

REPO = Path(__file__).resolve().parents[2]
S3_READY_TIMEOUT_S = 30.0

# A user's app as they would write it: a generator (for `sonic profile`), a validator whose
# expectation depends on FACTOR (so a run of the wrong version fails validation) and an output
# selection (the broadcast of 'header' only).
USER_APP = '''
import sonic
from sonic.app import Validation

FACTOR = {factor}
app = sonic.App("wordcount")

@app.stage()
def split(ctx):
    parts = ctx.inputs[0].read_text().split("\\n\\n")
    ctx.output("header").write_text(str(FACTOR))
    for i, part in enumerate(parts):
        ctx.output(f"part-{{i:04d}}").write_text(part)

@app.stage(after="split", pattern="scatter", select="part-*")
def count(ctx):
    ctx.output("count").write_text(str(len(ctx.inputs[0].read_text().split())))

@app.stage(after={{"count": "gather", "split": ("broadcast", "header")}})
def total(ctx):
    factor = int(ctx.inputs_from("split")[0].read_text())
    ctx.output("total").write_text(str(factor * sum(int(p.read_text()) for p in ctx.inputs_from("count"))))

@app.generate_input
def generate(path, size, seed):
    path.write_text("\\n\\n".join("word " * 25 for _ in range(max(2, size // 130))))

@app.validate_output
def check(input_path, outputs):
    want = FACTOR * len(input_path.read_text().split())
    got = int(outputs[0].read_text())
    return Validation(got == want, f"total {{got}}, expected {{want}} (factor {{FACTOR}})")
'''


def write_user_app(where: Path, factor: int) -> Path:
    path = where / "mymodule.py"
    path.write_text(textwrap.dedent(USER_APP.format(factor=factor)))
    return path


def user_env(home: Path) -> dict[str, str]:
    """A user's shell: no PYTHONPATH, their own HOME (no ~/.ssh/config of this machine), S3
    keys in boto3's normal chain (the environment)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SONIC_CLUSTER", "SONIC_HOME")}
    home.mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), PIP_NO_INDEX="1", **EMBEDDED_S3_CREDENTIALS)
    return env


def sonic_cli(args: Sequence[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sonic.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def run_json(args: Sequence[str], cwd: Path, env: dict[str, str]) -> dict[str, object]:
    done = sonic_cli([*args, "--json"], cwd, env)
    assert done.returncode == 0, f"sonic {' '.join(args)}: {done.stderr}"
    return dict(json.loads(done.stdout))


@contextmanager
def s3_server(directory: Path, host: str = "127.0.0.1", netns_argv: Sequence[str] = ()) -> Iterator[str]:
    """The project's S3-compatible server, run as a user would run MinIO; yields its endpoint."""
    directory.mkdir(parents=True, exist_ok=True)
    ready = directory / "ready.json"
    argv = [*netns_argv, sys.executable, "-m", "sonic.emulation.s3server", "--host", host, "--port", "0" if not netns_argv
            else "9000", "--bucket", "sonic-scratch", "--data-dir", str(directory / "data"), "--ready-file", str(ready)]
    env = {**os.environ, **EMBEDDED_S3_CREDENTIALS, "PYTHONPATH": str(REPO)}
    process = spawn(argv, log=directory / "s3.log", env=env, cwd=directory)
    try:
        endpoint = None
        for _ in backoff(time.monotonic() + S3_READY_TIMEOUT_S):
            assert process.poll() is None, tail(directory / "s3.log")
            try:
                endpoint = str(json.loads(ready.read_text())["endpoint_url"])
                break
            except (FileNotFoundError, ValueError):
                continue  # not written yet (it is written atomically)
        assert endpoint, f"S3 server not ready: {tail(directory / 's3.log')}"
        yield endpoint
    finally:
        stop_pid(process.pid, str(directory))


def cluster_yaml(vms: Sequence[dict[str, object]], endpoint: str) -> str:
    """The cluster file as a user writes it by hand (flow style, one VM a line)."""
    lines = ["# my VMs, written by hand", "vms:"]
    for vm in vms:
        ssh = vm.pop("ssh")
        fields = ", ".join(f"{k}: {v}" for k, v in vm.items())
        ssh_fields = ", ".join(f"{k}: {v}" for k, v in dict(ssh).items())  # type: ignore[call-overload]
        lines.append(f"  - {{{fields}, ssh: {{{ssh_fields}}}}}")
    lines.append(f"remote_storage: {{bucket: sonic-scratch, region: us-east-1, endpoint_url: '{endpoint}', "
                 "forward_credentials: true}")
    return "\n".join(lines) + "\n"
