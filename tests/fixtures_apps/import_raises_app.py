"""Raises while its module is imported: a bug in the user's module (exit code 2, one line)."""

import sonic

APP = sonic.App("import_raises")

raise RuntimeError("configuration missing: set MYAPP_HOME")
