"""Measured parameters of past runs, per input: what ``--strategy oracle`` plans from.

After every cluster run, the exact parameters it measured (:meth:`AppPrediction.from_run`)
are kept under ``ROOT/measured/APP/DIGEST.json``, where ``DIGEST`` is the xxh3-128 of the
input's content (file names and bytes, so a renamed copy of an input finds its
measurements and a changed input does not). The oracle plans from the newest measurement
of the same input.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import xxhash

from sonic.prediction import AppPrediction, Estimate, StagePrediction

CHUNK = 1 << 20


def input_digest(input_path: Path) -> str:
    """Content digest of an input file or directory (names relative to it, and bytes)."""
    h = xxhash.xxh3_128()
    files = [input_path] if input_path.is_file() else sorted(p for p in input_path.rglob("*") if p.is_file())
    for path in files:
        h.update(str(path.relative_to(input_path) if path != input_path else "").encode() + b"\0")
        with open(path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def _path(root: Path, app: str, digest: str) -> Path:
    return Path(root) / "measured" / app / f"{digest}.json"


def save_measured(root: Path, digest: str, prediction: AppPrediction) -> Path:
    """Write atomically (unique temporary name, then rename)."""
    path = _path(root, prediction.app, digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{digest}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(prediction.to_json(), fh)
    os.replace(tmp, path)
    return path


def load_measured(root: Path, app: str, digest: str) -> AppPrediction | None:
    """The stored measurement of this input, or None (absent or unreadable: measure again)."""
    path = _path(root, app, digest)
    try:
        doc = json.loads(path.read_text())
        stages = {
            name: StagePrediction(
                stage=s["stage"], instances=int(s["instances"]), input_bytes=float(s["input_bytes"]),
                time_s=Estimate(**s["time_s"]), memory_mb=Estimate(**s["memory_mb"]),
                output_bytes=Estimate(**s["output_bytes"]), trusted=bool(s["trusted"]))
            for name, s in doc["stages"].items()
        }
        return AppPrediction(doc["app"], int(doc["input_bytes"]), stages, source="measured",
                             features={k: float(v) for k, v in doc.get("features", {}).items()})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a damaged record is only a cache: the oracle measures again
