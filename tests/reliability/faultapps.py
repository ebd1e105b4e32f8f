"""Small apps whose stages misbehave on purpose, for the fault-injection tests.

Agents load them as ``tests.reliability.faultapps:FAULTY`` (the harness puts the project root
on every agent's PYTHONPATH). What goes wrong, and where, is decided by the app input: a JSON
document ``{"control": DIR, "parts": N, "mode": MODE, "target": I, "hang_s": S}``. Stages count
their attempts with marker files in ``DIR`` (created with O_EXCL, so exactly one attempt is
"the first"), which makes every fault deterministic: no timing is involved.

Modes (applied to instance ``target`` of stage ``work``):

- ``none``: behave.
- ``raise-once``: the first attempt raises.
- ``kill-once``: the first attempt SIGKILLs its own worker process (what the OOM killer does).
- ``hang-once``: the first attempt blocks for ``hang_s`` (a hung function; the per-instance
  timeout must kill it long before).
- ``raise-always``: every attempt raises (the job must fail with a precise message).
- ``hang-always``: every attempt blocks for ``hang_s`` (a stage that never returns).
- ``empty``: no ``work`` instance writes an output (its consumer ``join`` needs them).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import sonic
from sonic import Context, Validation

FAULTY = sonic.App("faulty")
PAYLOAD_BYTES = 64 * 1024


def control_doc(control: Path, parts: int = 4, mode: str = "none", target: int = 1,
                hang_s: float = 300.0) -> dict[str, Any]:
    return {"control": str(control), "parts": parts, "mode": mode, "target": target, "hang_s": hang_s}


def write_input(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(json.dumps(doc))
    return path


def _first_attempt(control: Path, name: str) -> bool:
    """True exactly once per (control dir, name), whichever VM or process asks."""
    try:
        fd = os.open(control / f"{name}.attempted", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def _payload(i: int) -> bytes:
    # Deterministic bytes, so a re-run producer writes exactly what it wrote before.
    seed = hashlib.sha256(f"part-{i}".encode()).digest()
    return (seed * (PAYLOAD_BYTES // len(seed) + 1))[:PAYLOAD_BYTES]


@FAULTY.stage()
def source(ctx: Context) -> None:
    doc = json.loads(ctx.inputs[0].read_text())
    header = json.dumps(doc).encode()
    for i in range(int(doc["parts"])):
        ctx.output(f"part-{i:03d}").write_bytes(len(header).to_bytes(4, "big") + header + _payload(i))


@FAULTY.stage(after="source", pattern="scatter")
def work(ctx: Context) -> None:
    raw = ctx.inputs[0].read_bytes()
    size = int.from_bytes(raw[:4], "big")
    doc = json.loads(raw[4:4 + size])
    body = raw[4 + size:]
    control, mode = Path(doc["control"]), doc["mode"]
    if mode == "empty":
        return
    if ctx.instance == int(doc["target"]) and mode != "none":
        if mode == "raise-always":
            raise RuntimeError(f"injected failure in work instance {ctx.instance}")
        if mode == "hang-always":
            threading.Event().wait(float(doc["hang_s"]))
        if _first_attempt(control, f"work-{ctx.instance}"):
            if mode == "raise-once":
                raise RuntimeError(f"injected first-attempt failure in work instance {ctx.instance}")
            if mode == "kill-once":
                os.kill(os.getpid(), signal.SIGKILL)
            if mode == "hang-once":
                threading.Event().wait(float(doc["hang_s"]))  # the hang itself; the timeout ends it
    digest = hashlib.sha256(body).hexdigest()
    ctx.output("digest").write_text(f"{ctx.instance} {digest}\n")


@FAULTY.stage(after="work", pattern="gather")
def join(ctx: Context) -> None:
    lines = sorted(p.read_text() for p in ctx.inputs)
    ctx.output("result").write_text("".join(lines))


@FAULTY.validate_output
def _validate(input_path: Path, outputs: list[Path]) -> Validation:
    doc = json.loads(Path(input_path).read_text())
    expected = sorted(f"{i} {hashlib.sha256(_payload(i)).hexdigest()}\n" for i in range(int(doc["parts"])))
    if len(outputs) != 1:
        return Validation(False, f"expected one result file, got {len(outputs)}")
    got = outputs[0].read_text()
    if got != "".join(expected):
        return Validation(False, "result does not match the digests of the parts")
    return Validation(True, f"{len(expected)} digests match")
