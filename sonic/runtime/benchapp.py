"""Tiny apps the benchmarks and calibration run on agents (importable everywhere Sonic is)."""

from __future__ import annotations

import sonic

noop = sonic.App("noop")


@noop.stage()
def nothing(ctx: sonic.Context) -> None:
    """An empty function: its round trip is the agent's invocation overhead."""
