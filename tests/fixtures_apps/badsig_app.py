"""Stage ``twoargs`` takes two required arguments: fails when the module is imported."""

import sonic

APP = sonic.App("badsig")


@APP.stage()
def twoargs(ctx, extra):
    pass
