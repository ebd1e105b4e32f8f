"""``explode`` raises after its source stage ran: a runtime failure (exit code 1)."""

import sonic

APP = sonic.App("crash")


@APP.stage()
def source(ctx):
    ctx.output("data").write_bytes(b"".join(p.read_bytes() for p in ctx.inputs))


@APP.stage(after="source", pattern="scatter")
def explode(ctx):
    raise RuntimeError("boom in explode")
