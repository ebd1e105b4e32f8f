"""Human views of a plan: a text table and a Graphviz DOT graph (pure string builders)."""

from __future__ import annotations

from collections.abc import Sequence

from sonic.app import App
from sonic.plan import PassingMethod, Plan
from sonic.planner.cost import perf_per_dollar

_METHOD_COLOURS = {"vm": "forestgreen", "direct": "royalblue", "remote": "darkorange"}


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def render_table(plan: Plan) -> str:
    """Per edge: chosen method and predicted seconds of every method (the three built-ins, then
    any extra one the plan names); per stage: instances per VM; totals (latency, dollars,
    perf/$, VMs used)."""
    lines = [f"plan for {plan.app} (strategy {plan.strategy}, objective {plan.objective})", ""]
    names = [m.value for m in PassingMethod]
    names += sorted({k for e in plan.edges for k in e.predicted_s} - set(names))
    edge_rows = [("edge", "pattern", "method", *(f"{name} s" for name in names))]
    for e in plan.edges:
        p = e.predicted_s
        edge_rows.append((f"{e.src} -> {e.dst}", e.pattern, e.method.value,
                          *(_seconds(p.get(name)) for name in names)))
    lines += _grid(edge_rows) if plan.edges else ["(no edges)"]
    lines.append("")
    stage_rows = [("stage", "instances", "memory MB", "placement (instances per VM)")]
    for name, s in plan.stages.items():
        placement = " ".join(f"{vm}:{count}" for vm, count in s.placement.items() if count)
        stage_rows.append((name, str(s.instances), f"{s.memory_mb:.0f}", placement))
    lines += _grid(stage_rows)
    lines.append("")
    lines += _parallelism_lines(plan)
    latency = plan.predicted.get("latency_s")
    cost = plan.predicted.get("cost_usd")
    vms = sorted({vm for s in plan.stages.values() for vm, c in s.placement.items() if c})
    if latency is not None and cost is not None:
        lines.append(f"predicted latency {latency:.3f} s, cost ${cost:.6f}, "
                     f"perf/$ {perf_per_dollar(latency, cost):.4g}, {len(vms)} VM(s): {', '.join(vms)}")
    for note in plan.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _parallelism_lines(plan: Plan) -> list[str]:
    """Per elastic stage: the count chosen and the predicted latency at the other counts."""
    rows = [("elastic stage", "chosen", "range", f"count: predicted latency s of the best plan, [chosen] for {plan.objective}")]
    for name, s in plan.stages.items():
        choice = s.parallelism
        if choice is None:
            continue
        latency = plan.predicted.get("latency_s")
        points = [(o.instances, o.latency_s) for o in choice.alternatives] + [(choice.chosen, latency)]
        shown = " ".join(f"[{n}: {_seconds(t)}]" if n == choice.chosen else f"{n}: {_seconds(t)}"
                         for n, t in sorted(points))
        rows.append((name, str(choice.chosen), f"{choice.min}-{choice.max}", shown))
    return _grid(rows) + [""] if len(rows) > 1 else []


def _grid(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for k, row in enumerate(rows):
        out.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_dot(plan: Plan, app: App) -> str:
    """The DAG in Graphviz DOT: stages with instances per VM, edges labelled (and coloured) by method."""
    lines = [f"digraph {_quote(plan.app)} {{", "  rankdir=LR;", "  node [shape=box, style=rounded];"]
    for name in app.topological_order():
        s = plan.stages.get(name)
        detail = ""
        if s is not None:
            placement = ", ".join(f"{vm}:{c}" for vm, c in s.placement.items() if c)
            detail = f"\\n{s.instances} instance(s)\\n{placement}"
        lines.append(f"  {_quote(name)} [label=\"{_quote(name)[1:-1]}{detail}\"];")
    for e in plan.edges:
        method = e.method.value
        seconds = e.predicted_s.get(method)
        label = f"{method} ({e.pattern})" + (f"\\n{seconds:.2f} s" if seconds is not None else "")
        lines.append(f"  {_quote(e.src)} -> {_quote(e.dst)} [label=\"{label}\", "
                     f"color={_METHOD_COLOURS.get(method, 'black')}];")
    lines.append("}")
    return "\n".join(lines)
