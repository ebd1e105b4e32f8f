"""Typed records of what a run measured; they cross module boundaries (runtime, profiler, CLI)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class InstanceMetrics:
    """What one stage instance did. Times are seconds since the epoch / durations in seconds."""

    stage: str
    instance: int
    input_bytes: int
    output_bytes: int
    n_outputs: int
    wall_s: float
    peak_memory_mb: float
    started: float
    ended: float
    vm: str | None = None
    passing_s: float = 0.0
    cold: bool = False
    attempt: int = 1
    error: str | None = None
    # See sonic.execution for what these mean; wall_s is net of cpu_wait_s.
    own_memory_mb: float = 0.0
    baseline_memory_mb: float = 0.0
    cpu_wait_s: float = 0.0


@dataclass
class EdgeMetrics:
    src: str
    dst: str
    method: str
    bytes: int
    seconds: float
    #: Objects the producer stage stored (one per instance for a packed shuffle, else one per file).
    objects_stored: int = 0


@dataclass
class StageMetrics:
    name: str
    instances: int
    seconds: float
    peak_memory_mb: float
    input_bytes: int = 0
    output_bytes: int = 0


@dataclass
class RunResult:
    """The outcome of running an app once; ``to_json`` gives the stable CLI keys."""

    app: str
    strategy: str
    input_bytes: int
    latency_s: float
    output_ok: bool
    output_detail: str
    edges: list[EdgeMetrics]
    stages: list[StageMetrics]
    instances: list[InstanceMetrics] = field(default_factory=list)
    predicted_latency_s: float | None = None
    cost_usd: float | None = None
    outputs: list[str] = field(default_factory=list)
    features: dict[str, float] = field(default_factory=dict)
    predicted_vs_actual: dict[str, Any] = field(default_factory=dict)
    learning: dict[str, Any] = field(default_factory=dict)   # what learning from the run did
    replans: list[dict[str, Any]] = field(default_factory=list)  # mid-job re-plans, in order
    #: S3 requests of the run's data passing: {"put": objects uploaded, "get": (ranged) downloads}
    s3_requests: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "strategy": self.strategy,
            "input_bytes": self.input_bytes,
            "latency_s": round(self.latency_s, 6),
            "predicted_latency_s": self.predicted_latency_s,
            "cost_usd": self.cost_usd,
            "output_ok": self.output_ok,
            "output_detail": self.output_detail,
            "edges": [asdict(e) for e in self.edges],
            "stages": [asdict(s) for s in self.stages],
            "instances": [asdict(i) for i in self.instances],
            "outputs": self.outputs,
            **({"predicted_vs_actual": self.predicted_vs_actual} if self.predicted_vs_actual else {}),
            **({"learning": self.learning} if self.learning else {}),
            **({"replans": self.replans} if self.replans else {}),
            **({"s3_requests": self.s3_requests} if self.s3_requests else {}),
        }
