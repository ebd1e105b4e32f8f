"""Example applications of shapes the built-in workloads do not have (issue 10, item 8).

Each module defines ``app`` (a :class:`sonic.App`, also exported as ``APP`` like the built-in
workloads) with a generator, a validator that recomputes the expected result from the input,
and an input-features hook. Load one from the repository root as ``examples.topk:app``,
``examples.starjoin:app`` or ``examples.skewed:app``; see ``examples/README.md``.
"""
