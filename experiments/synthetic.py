"""The one-edge synthetic app of the fanout experiment: ``produce --broadcast--> consume x F``.

``produce`` (1 instance) reads a tiny JSON input ``{"object_bytes": S, "compute_s": t}`` and
writes one object ``blob`` of S bytes; every one of the F ``consume`` instances receives that
same object (broadcast: the bytes moved grow with the fanout), reads and hashes all of it,
then "computes" for t seconds and writes a small acknowledgement.

The compute is ``time.sleep``: the emulated VMs of a local cluster share this machine's two
cores, so CPU-bound consumers would measure the host's CPU, not the data passing this
experiment is about. A sleeping consumer still holds its slot exactly as a busy one does, so
waves on a VM (VM-Storage with more consumers than cores) cost what they cost on real VMs.

One module attribute per fanout, built on demand (PEP 562): ``f8`` is the app with 8
consumers. Agents load it as ``MODULE:f8``; the module only needs ``sonic`` and the standard
library, so it can be dropped into a VM's working directory as a plain file
(:func:`install_on_cluster`), the way a user ships a ``module:attr`` app next to its agent.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import sonic
from sonic import Context, Validation

#: Module name under which the file is copied into every VM's working directory.
REMOTE_MODULE = "sonic_exp_fanout"
_ATTR_RE = re.compile(r"^f([1-9][0-9]{0,3})$")
_BLOCK = 1 << 20
_APPS: dict[int, sonic.App] = {}


def write_input(path: Path, object_bytes: int, compute_s: float) -> Path:
    """The app input: the object size and the consumers' compute time."""
    path = Path(path)
    path.write_text(json.dumps({"object_bytes": int(object_bytes), "compute_s": float(compute_s)}))
    return path


def _params(path: Path) -> dict[str, Any]:
    doc = json.loads(Path(path).read_text())
    return {"object_bytes": int(doc["object_bytes"]), "compute_s": float(doc["compute_s"])}


def _produce(ctx: Context) -> None:
    params = _params(ctx.inputs[0])
    left = params["object_bytes"]
    # A pseudo-random MiB (seeded: reruns are identical) repeated: incompressible per block,
    # cheap to write.
    block = hashlib.shake_256(b"sonic-fanout").digest(_BLOCK)
    with ctx.output("blob").open("wb") as fh:
        while left > 0:
            fh.write(block[: min(left, _BLOCK)])
            left -= _BLOCK
    ctx.output("params.json").write_text(json.dumps(params))


def _consume(ctx: Context) -> None:
    blobs = [p for p in ctx.inputs if p.name == "blob"]
    params = _params(next(p for p in ctx.inputs if p.name == "params.json"))
    digest = hashlib.blake2b(digest_size=16)
    size = 0
    with blobs[0].open("rb") as fh:
        while chunk := fh.read(4 * _BLOCK):
            digest.update(chunk)
            size += len(chunk)
    time.sleep(params["compute_s"])
    ctx.output("ack.json").write_text(json.dumps({"instance": ctx.instance, "bytes": size,
                                                  "digest": digest.hexdigest()}))


def build(fanout: int) -> sonic.App:
    """The app with ``fanout`` consumers (cached)."""
    if fanout not in _APPS:
        app = sonic.App("fanout")
        app.add_stage(_produce, name="produce")
        app.add_stage(_consume, name="consume", after="produce", pattern="broadcast", instances=fanout)

        @app.validate_output
        def _validate(input_path: Path, outputs: list[Path]) -> Validation:
            params = _params(input_path)
            acks = [json.loads(Path(p).read_text()) for p in outputs if Path(p).name == "ack.json"]
            if len(acks) != fanout:
                return Validation(False, f"{len(acks)} acknowledgements, expected {fanout}")
            if any(a["bytes"] != params["object_bytes"] for a in acks):
                return Validation(False, "a consumer read a wrong number of bytes")
            if len({a["digest"] for a in acks}) != 1:
                return Validation(False, "consumers read different bytes")
            return Validation(True, f"{fanout} consumers each read {params['object_bytes']} identical bytes")

        _APPS[fanout] = app.validate()
    return _APPS[fanout]


def __getattr__(name: str) -> sonic.App:
    match = _ATTR_RE.match(name)
    if match is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r} (apps are f1, f2, ...)")
    return build(int(match.group(1)))


def install_on_cluster(cluster: Any) -> str:
    """Copy this module into every VM's working directory (its data dir) of a *local*
    cluster, where the agents' workers import ``module:attr`` apps from; return the module
    name to use in app specs. Real VMs would receive the file over SFTP instead."""
    for vm in cluster.vms:
        target = Path(vm.data_dir) / f"{REMOTE_MODULE}.py"
        tmp = target.with_suffix(".py.tmp")
        shutil.copyfile(Path(__file__), tmp)
        tmp.replace(target)
    return REMOTE_MODULE


def spec() -> str:
    """The app spec agents load. One for every fanout: a worker only looks up stage
    functions, which all fanouts share; the instance count lives in the coordinator's DAG
    (so the agents keep one warm pool instead of one per fanout)."""
    return f"{REMOTE_MODULE}:f1"
