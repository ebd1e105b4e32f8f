"""A valid app whose stage prints to stdout (user code often does)."""

import sonic

APP = sonic.App("noisy")


@APP.stage()
def chatty(ctx):
    print("debug output from chatty", flush=True)
    ctx.output("copy").write_bytes(b"".join(p.read_bytes() for p in ctx.inputs))
