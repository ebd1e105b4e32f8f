"""The planner: per-edge passing method and per-stage placement from predictions (pure, no I/O).

``make_plan(app, prediction, cluster, ...)`` runs an exact dynamic program over the DAG on the
cost model of :mod:`sonic.planner.cost`; ``render_table(plan)`` and ``render_dot(plan, app)``
are its human views.
"""

from sonic.planner.optimise import make_plan
from sonic.planner.render import render_dot, render_table

__all__ = ["make_plan", "render_dot", "render_table"]
