"""Where Sonic keeps what it learns: profiles, models and measured runs (the *store root*).

Resolution, first match wins:

1. ``--root DIR`` on the command line;
2. the ``SONIC_HOME`` environment variable;
3. the nearest ``.sonic`` directory in the working directory or one of its parents (as git
   finds ``.git``), so commands run from a project's subdirectory share its store;
4. ``./.sonic`` in the working directory (created on first write).

Commands that learn print the resolved absolute path, so it is never silent which store
was used.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "SONIC_HOME"
DIR_NAME = ".sonic"


def store_root(explicit: Path | None = None) -> Path:
    """The store root for this invocation (module doc), as an absolute path."""
    if explicit is not None:
        return explicit.expanduser().absolute()
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser().absolute()
    here = Path.cwd()
    for folder in (here, *here.parents):
        if (folder / DIR_NAME).is_dir():
            return folder / DIR_NAME
    return here / DIR_NAME
