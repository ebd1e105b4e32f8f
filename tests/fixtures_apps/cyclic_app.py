"""Stages ``ping`` and ``pong`` depend on each other (2-cycle)."""

import sonic

APP = sonic.App("cyclic")


@APP.stage(after="pong")
def ping(ctx):
    pass


@APP.stage(after="ping")
def pong(ctx):
    pass
