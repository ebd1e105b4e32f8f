"""Mid-job re-planning: when a finished stage's output or a consumer's fanout is far from what
the plan assumed, plan the rest of the job again from what was observed.

The scheduler (:mod:`sonic.runtime.scheduler`) calls a :class:`ModelReplanner` when a stage
finishes for the first time, before routing its consumers. The replanner compares the stage's
total output bytes and the instance counts of the consumers it determines with the current
prediction; if either is off by more than ``threshold`` (relative, in either direction: 0.5
means outside [1/1.5, 1.5] x predicted), it re-predicts the stages not yet run from the
observed ones (:meth:`models.AppModel.predict` with ``observed``) and re-plans with the same
strategy and objective. The scheduler adopts the new edges and placement of stages that have
not started. Every re-plan is recorded (``records``) for the run report.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sonic.plan import Plan
from sonic.prediction import AppPrediction, Estimate, StagePrediction
from sonic.runtime.scheduler import StageObservation

#: Default relative deviation that triggers a re-plan (documented in docs/architecture.md).
DEFAULT_THRESHOLD = 0.5

#: Re-predicts the app given stages already observed and instance counts already known.
Repredict = Callable[[Mapping[str, StagePrediction], Mapping[str, int]], AppPrediction]
#: Plans for a prediction (same strategy, objective and cluster as the original plan).
Replan = Callable[[AppPrediction], Plan]


def deviation(observed: float, predicted: float) -> float:
    """Relative deviation in either direction: 0 when equal, 1.0 when 2x or 0.5x."""
    if predicted <= 0 or observed <= 0:
        return 0.0 if predicted == observed else float("inf")
    return max(observed / predicted, predicted / observed) - 1.0


@dataclass
class ModelReplanner:
    """The scheduler's ``replanner``: see the module doc."""

    prediction: AppPrediction
    plan: Plan
    repredict: Repredict
    replan: Replan
    threshold: float = DEFAULT_THRESHOLD
    observed: dict[str, StagePrediction] = field(default_factory=dict)
    known_instances: dict[str, int] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.threshold > 0:
            raise ValueError(f"re-plan threshold must be positive, got {self.threshold!r}")

    def __call__(self, obs: StageObservation) -> Plan | None:
        predicted = self.prediction.stages.get(obs.stage)
        n = max(obs.instances, 1)
        self.observed[obs.stage] = StagePrediction(
            stage=obs.stage, instances=obs.instances, input_bytes=obs.input_bytes,
            time_s=Estimate.exact(obs.wall_s), memory_mb=Estimate.exact(obs.memory_mb),
            output_bytes=Estimate.exact(obs.output_bytes / n))
        self.known_instances.update(obs.consumer_instances)
        if predicted is None:
            return None
        deviations = {"output_bytes": (obs.output_bytes, predicted.total_output_bytes)}
        for consumer, count in obs.consumer_instances.items():
            expected = self.prediction.stages.get(consumer)
            if expected is not None:
                deviations[f"{consumer}.instances"] = (count, expected.instances)
        off = {k: v for k, v in deviations.items() if deviation(*v) > self.threshold}
        if not off:
            return None
        new_prediction = self.repredict(self.observed, self.known_instances)
        new_plan = self.replan(new_prediction)
        self.records.append({
            "after_stage": obs.stage,
            "deviations": {k: {"predicted": round(float(p), 3), "observed": round(float(o), 3)}
                           for k, (o, p) in off.items()},
            "methods": {f"{e.src}->{e.dst}": {"old": self.plan.edge(e.src, e.dst).method.value,
                                              "new": e.method.value}
                        for e in new_plan.edges if e.src not in self.observed or e.dst not in self.observed},
            "predicted_latency_s": {"old": self.plan.predicted.get("latency_s"),
                                    "new": new_plan.predicted.get("latency_s")},
        })
        self.prediction, self.plan = new_prediction, new_plan
        return new_plan
