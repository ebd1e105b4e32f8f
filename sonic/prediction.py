"""Predicted parameters of an application for one input: what the planner consumes.

``models`` produces an :class:`AppPrediction` from fitted per-stage regressions; the oracle
baseline builds one from a measured run (:meth:`AppPrediction.from_run`). Every number is per
*instance* of a stage, except ``instances`` (the stage's fanout).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sonic.metrics import RunResult


@dataclass(frozen=True)
class Estimate:
    """A predicted quantity: ``mean`` for latency, ``hi`` (conservative upper bound, e.g. a
    90% quantile) where under-prediction is costly, as for memory."""

    mean: float
    hi: float

    @classmethod
    def exact(cls, value: float) -> Estimate:
        return cls(float(value), float(value))


@dataclass(frozen=True)
class StagePrediction:
    stage: str
    instances: int
    input_bytes: float          # per instance
    time_s: Estimate            # per instance execution time (warm)
    memory_mb: Estimate         # per instance peak memory
    output_bytes: Estimate      # per instance, all output files together
    trusted: bool = True        # False until the models predict this stage well enough
    untrusted_reason: str = ""  # why not, in words (metric and MAPE vs limit, or sample count)

    @property
    def total_output_bytes(self) -> float:
        return self.output_bytes.mean * self.instances


@dataclass(frozen=True)
class AppPrediction:
    app: str
    input_bytes: int
    stages: dict[str, StagePrediction]
    source: str = "models"      # "models" | "measured" (oracle)
    features: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # e.g. extrapolation far beyond the profile
    worker_memory_mb: float = 0.0  # resident baseline of a worker, included in memory_mb

    def untrusted_stages(self) -> list[str]:
        return [name for name, s in self.stages.items() if not s.trusted]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_run(cls, result: RunResult) -> AppPrediction:
        """Exact parameters of a measured run: the oracle's input."""
        stages: dict[str, StagePrediction] = {}
        for stage in result.stages:
            rows = [m for m in result.instances if m.stage == stage.name]
            n = max(len(rows), 1)
            mean_time = sum(m.wall_s for m in rows) / n
            mean_out = sum(m.output_bytes for m in rows) / n
            stages[stage.name] = StagePrediction(
                stage=stage.name,
                instances=len(rows),
                input_bytes=sum(m.input_bytes for m in rows) / n,
                time_s=Estimate(mean_time, max((m.wall_s for m in rows), default=0.0)),
                memory_mb=Estimate.exact(max((m.peak_memory_mb for m in rows), default=0.0)),
                output_bytes=Estimate(mean_out, max((m.output_bytes for m in rows), default=0.0)),
            )
        return cls(result.app, result.input_bytes, stages, source="measured", features=dict(result.features))
