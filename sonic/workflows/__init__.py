"""The composing layer: the workflows behind the CLI's verbs, each tying the layers below.

``profiling`` (profile -> fit), ``planning`` (models -> prediction -> plan), ``session``
(run on a cluster -> learn), ``cluster_commands`` (cluster up/status/down, local or listed),
``demo`` (all of it on a throwaway local cluster). Nothing below imports this package.
"""
