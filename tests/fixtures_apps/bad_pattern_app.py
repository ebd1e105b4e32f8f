"""Stage ``fan`` uses an edge pattern that does not exist: fails at import."""

import sonic

APP = sonic.App("bad_pattern")


@APP.stage()
def start(ctx):
    pass


@APP.stage(after="start", pattern="fanout")
def fan(ctx):
    pass
