"""Stage ``orphan`` names a producer ``missing_stage`` that does not exist."""

import sonic

APP = sonic.App("unknown_after")


@APP.stage()
def start(ctx):
    pass


@APP.stage(after="missing_stage", pattern="scatter")
def orphan(ctx):
    pass
