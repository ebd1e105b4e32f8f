"""Append-only Parquet store of profile measurements: ``ROOT/profiles/APP/part-*.parquet``.

Every run (or batch of runs) becomes a new part file; nothing is ever rewritten, so a crash
mid-sweep, a concurrent ``sonic run`` refit and a profile sweep can all write safely. A part
is written to a hidden temporary name and renamed into place, so readers never see half a
file. Reading concatenates the parts in name order (names start with a UTC timestamp).
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa

from profiler.schema import COLUMNS, LATER_COLUMNS
from sonic.errors import CorruptProfileError

DEFAULT_ROOT = Path(".sonic")


class ProfileStore:
    """Profiles of every app under ``root`` (default ``.sonic``)."""

    def __init__(self, root: Path | str = DEFAULT_ROOT) -> None:
        self.root = Path(root)

    def app_dir(self, app: str) -> Path:
        return self.root / "profiles" / app

    def parts(self, app: str) -> list[Path]:
        folder = self.app_dir(app)
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.glob("part-*.parquet") if p.is_file())

    def append(self, app: str, frame: pd.DataFrame) -> Path:
        """Write ``frame`` as a new part file and return its path."""
        missing = [c for c in COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"profile rows for {app!r} lack columns {missing}; build them with run_to_frame")
        folder = self.app_dir(app)
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"{time.time() % 1:.6f}"[1:]
        name = f"part-{stamp}Z-{uuid.uuid4().hex[:12]}.parquet"
        tmp = folder / f".{name}.tmp"
        frame.to_parquet(tmp, index=False, engine="pyarrow")
        os.replace(tmp, folder / name)
        return folder / name

    def load(self, app: str) -> pd.DataFrame:
        """All measurements of ``app`` (an empty table with the schema if there are none)."""
        frames = [self._read_part(p) for p in self.parts(app)]
        frames = [f for f in frames if not f.empty]
        if not frames:
            return pd.DataFrame({c: pd.Series(dtype=t) for c, t in COLUMNS.items()})
        return pd.concat(frames, ignore_index=True, sort=False)

    def _read_part(self, path: Path) -> pd.DataFrame:
        try:
            frame = pd.read_parquet(path, engine="pyarrow")
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise CorruptProfileError(
                f"profile file {path} is unreadable ({type(exc).__name__}: {exc}); "
                "move or delete it and re-run `sonic profile APP`"
            ) from exc
        for column, default in LATER_COLUMNS.items():
            if column not in frame.columns:
                frame[column] = pd.Series([default] * len(frame), dtype=COLUMNS[column])
        missing = [c for c in COLUMNS if c not in frame.columns]
        if missing:
            raise CorruptProfileError(
                f"profile file {path} lacks columns {', '.join(missing)}; it was not written by "
                "this version of sonic: move or delete it and re-run `sonic profile APP`"
            )
        return frame
