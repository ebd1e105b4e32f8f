"""Two stages called ``twice``: fails at import."""

import sonic

APP = sonic.App("duplicate")


@APP.stage()
def twice(ctx):
    pass


@APP.stage(name="twice", after="twice")
def second(ctx):
    pass
