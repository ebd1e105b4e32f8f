"""Predicted vs actual: how far a plan's predictions were from what a run measured."""

from __future__ import annotations

from typing import Any

from sonic.metrics import RunResult
from sonic.plan import Plan
from sonic.prediction import AppPrediction


def _pair(predicted: float | None, actual: float) -> dict[str, float | None]:
    """Predicted and actual, and the residual actual/predicted - 1 (None if not defined)."""
    residual = actual / predicted - 1.0 if predicted else None
    return {"predicted": predicted, "actual": actual,
            "residual": round(residual, 4) if residual is not None else None}


def compare(plan: Plan, prediction: AppPrediction, result: RunResult) -> dict[str, Any]:
    """Per stage (instances, seconds per instance, memory) and per edge (seconds), each with
    its residual, so a misfit of one part of the model is visible.

    Memory is compared in the models' semantics (docs/architecture.md, Measurement): the
    largest instance's own memory plus one worker's resident baseline, against the predicted
    mean of the same quantity."""
    stages = []
    for stage in result.stages:
        predicted = prediction.stages.get(stage.name)
        rows = [m for m in result.instances if m.stage == stage.name]
        mean_time = sum(m.wall_s for m in rows) / len(rows) if rows else 0.0
        own = max((m.own_memory_mb for m in rows), default=0.0)
        stages.append({
            "name": stage.name,
            "trusted": bool(predicted and predicted.trusted),
            "instances": _pair(predicted.instances if predicted else None, stage.instances),
            "time_per_instance_s": _pair(predicted.time_s.mean if predicted else None, mean_time),
            "peak_memory_mb": _pair(predicted.memory_mb.mean if predicted else None,
                                    own + prediction.worker_memory_mb if prediction.worker_memory_mb
                                    else stage.peak_memory_mb),
        })
    # An edge's predicted seconds (planner/assemble.py) run from its producer stage's end until
    # its consumer stage ends: transfer, waits and the consumer's compute. The measured
    # counterpart is the same span, taken from the instances' own end times (clocks of the
    # VMs, which a real pool keeps in sync with NTP; one host's clock here). The summed
    # fetch and upload seconds of the edge are reported next to it as ``transfer_s``.
    ends: dict[str, float] = {}
    for m in result.instances:
        ends[m.stage] = max(ends.get(m.stage, m.ended), m.ended)
    edges = []
    for edge in result.edges:
        planned = plan.edge(edge.src, edge.dst)
        span = max(ends[edge.dst] - ends[edge.src], 0.0) if edge.src in ends and edge.dst in ends else 0.0
        edges.append({"src": edge.src, "dst": edge.dst, "method": edge.method,
                      "seconds": _pair(planned.predicted_s.get(planned.method.value), span),
                      "transfer_s": edge.seconds})
    return {"latency_s": _pair(plan.predicted.get("latency_s"), result.latency_s),
            "cost_usd": _pair(plan.predicted.get("cost_usd"), result.cost_usd or 0.0),
            "stages": stages, "edges": edges}


def render(doc: dict[str, Any]) -> list[str]:
    def num(v: Any, fmt: str) -> str:
        return format(v, fmt) if isinstance(v, (int, float)) else "-"

    lines = [f"  predicted vs actual: latency {num(doc['latency_s']['predicted'], '.2f')} s vs "
             f"{num(doc['latency_s']['actual'], '.2f')} s"]
    for s in doc["stages"]:
        lines.append(f"    stage {s['name']:12s} instances {num(s['instances']['predicted'], 'd'):>4s} vs "
                     f"{s['instances']['actual']:<4d} s/instance {num(s['time_per_instance_s']['predicted'], '.3f')} vs "
                     f"{num(s['time_per_instance_s']['actual'], '.3f')}  memory {num(s['peak_memory_mb']['predicted'], '.0f')}"
                     f" vs {num(s['peak_memory_mb']['actual'], '.0f')} MB{'' if s['trusted'] else '  (untrusted)'}")
    for e in doc["edges"]:
        lines.append(f"    edge  {e['src'] + ' -> ' + e['dst']:24s} {e['method']:7s} "
                     f"{num(e['seconds']['predicted'], '.3f')} s vs {num(e['seconds']['actual'], '.3f')} s "
                     f"(producer end to consumer end; transfers {num(e['transfer_s'], '.3f')} s)")
    return lines
