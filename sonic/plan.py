"""The Plan: per-edge passing method and per-stage placement (JSON keys of DESIGN.md section 5).

A plan is produced by the planner (or written by hand) and executed by the coordinator.
Placement counts are for the *predicted* instance count; at run time the coordinator scales
them to the actual fanout, keeping the proportions, and a consumer of a ``vm`` edge always
runs on the VM that holds its input (that is what VM-Storage means).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sonic.app import App
from sonic.documents import decode, dotted
from sonic.errors import PlanError
from sonic.passing import WIRE_ALIASES as WIRE_ALIASES  # re-exported: PassingMethod and WIRE_ALIASES
from sonic.passing import PassingMethod as PassingMethod  # live with the method identities (sonic.passing)
from sonic.passing import PlanMethod, plan_method

OBJECTIVES = ("latency", "cost", "perf-per-dollar")
MAX_INSTANCES = 100_000          # per stage: far beyond any real fanout; more is a typo
MAX_INPUT_BYTES = 10**15         # 1 PB, as sonic.sizes
MAX_MEMORY_MB = 16 * 1024 * 1024  # 16 TiB
MAX_PLAN_CHARS = 64 * 1024 * 1024


def _number(value: Any, *, low: float = 0.0, high: float = 1e12) -> bool:
    """A real (not bool), finite number in [low, high]."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and low <= value <= high)
STRATEGIES = ("sonic", "remote", "vm", "direct", "oracle")


@dataclass(frozen=True)
class CountOption:
    """The best plan the planner found with an elastic stage at ``instances`` (``None``: none fits)."""

    instances: int
    latency_s: float | None
    cost_usd: float | None


@dataclass
class ParallelismChoice:
    """An elastic stage's chosen instance count, its bounds and the best plan at other counts."""

    min: int
    max: int
    chosen: int
    alternatives: list[CountOption] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"min": self.min, "max": self.max, "chosen": self.chosen,
                "alternatives": [{"instances": o.instances,
                                  "latency_s": None if o.latency_s is None else round(o.latency_s, 6),
                                  "cost_usd": None if o.cost_usd is None else round(o.cost_usd, 9)}
                                 for o in self.alternatives]}

    @classmethod
    def from_json(cls, doc: Any, *, where: str) -> ParallelismChoice:
        def count(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_INSTANCES

        if not isinstance(doc, dict) or not all(count(doc.get(k)) for k in ("min", "max", "chosen")):
            raise PlanError(f"{where}: parallelism must be an object with integer min, max and chosen "
                            f"from 1 to {MAX_INSTANCES}")
        if not doc["min"] <= doc["chosen"] <= doc["max"]:
            raise PlanError(f"{where}: parallelism chosen {doc['chosen']} is outside [{doc['min']}, {doc['max']}]")
        options: list[CountOption] = []
        raw = doc.get("alternatives", [])
        if not isinstance(raw, list):
            raise PlanError(f"{where}: parallelism alternatives must be a list")
        for item in raw:
            if not isinstance(item, dict) or not count(item.get("instances")) or not all(
                    item.get(k) is None or _number(item.get(k)) for k in ("latency_s", "cost_usd")):
                raise PlanError(f"{where}: each parallelism alternative needs instances and finite latency_s, "
                                "cost_usd (or null)")
            options.append(CountOption(item["instances"], item.get("latency_s"), item.get("cost_usd")))
        return cls(doc["min"], doc["max"], doc["chosen"], options)


@dataclass
class StagePlan:
    instances: int
    placement: dict[str, int]
    memory_mb: float = 0.0
    #: Elastic stages only: the instance count the planner chose (the runtime enforces it).
    parallelism: ParallelismChoice | None = None


@dataclass
class EdgePlan:
    src: str
    dst: str
    pattern: str
    #: A built-in's enum member, or a registered extra method's identity (``sonic.passing``);
    #: JSON holds its plan name (``.value``) either way.
    method: PlanMethod
    predicted_s: dict[str, float] = field(default_factory=dict)


@dataclass
class Plan:
    app: str
    input_bytes: int
    objective: str
    strategy: str
    stages: dict[str, StagePlan]
    edges: list[EdgePlan]
    predicted: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def edge(self, src: str, dst: str) -> EdgePlan:
        for e in self.edges:
            if e.src == src and e.dst == dst:
                return e
        raise PlanError(f"plan has no edge {src} -> {dst}; add it to \"edges\"")

    def chosen_counts(self) -> dict[str, int]:
        """Elastic stage -> the instance count this plan chose for it."""
        return {name: s.parallelism.chosen for name, s in self.stages.items() if s.parallelism is not None}

    def to_json(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "input_bytes": self.input_bytes,
            "objective": self.objective,
            "strategy": self.strategy,
            "stages": {
                name: {"instances": s.instances, "placement": dict(s.placement), "memory_mb": round(s.memory_mb, 1),
                       **({"parallelism": s.parallelism.to_json()} if s.parallelism is not None else {})}
                for name, s in self.stages.items()
            },
            "edges": [
                {"src": e.src, "dst": e.dst, "pattern": e.pattern, "method": e.method.value,
                 "predicted_s": {k: round(v, 6) for k, v in e.predicted_s.items()}}
                for e in self.edges
            ],
            "predicted": dict(self.predicted),
            "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, doc: Any, *, source: str = "plan") -> Plan:
        """Parse and type-check a plan document; errors name the key and the fix.

        The keys and their types are decoded by msgspec into these dataclasses (a wrong type
        names its path, e.g. ``$.stages.map.instances``); the checks before fill the defaults
        and keep the messages for a wrong top level, the checks after are those of values."""
        if not isinstance(doc, dict):
            raise PlanError(f"{source}: a plan must be a JSON object, got {type(doc).__name__}")
        missing = [k for k in ("app", "stages", "edges") if k not in doc]
        if missing:
            raise PlanError(f"{source}: missing key(s) {', '.join(missing)}; see `sonic plan APP --json` for the format")
        known = {"app", "input_bytes", "objective", "strategy", "stages", "edges", "predicted", "notes"}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise PlanError(f"{source}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
        objective = doc.get("objective", "latency")
        if objective not in OBJECTIVES:
            raise PlanError(f"{source}: objective {objective!r} is not one of {', '.join(OBJECTIVES)}")
        typed = {"input_bytes": 0, "objective": "latency", "strategy": "sonic", **doc}
        where = _plan_where(doc)
        stages: dict[str, StagePlan] = {}
        if isinstance(doc["stages"], dict):
            typed["stages"] = {}  # each stage is decoded on its own, so that an error names it
            for name, sdoc in doc["stages"].items():
                choice = None
                if isinstance(sdoc, dict) and sdoc.get("parallelism") is not None:
                    choice = ParallelismChoice.from_json(sdoc["parallelism"], where=f"{source}: stage {name!r}")
                stages[str(name)] = decode(_stage_defaults(sdoc), StagePlan, source=source, error=PlanError,
                                           fix=PLAN_FIX, where=where, mapping="an object", at=["stages", str(name)])
                stages[str(name)].parallelism = choice
        if isinstance(doc["edges"], list):
            typed["edges"] = [_edge_defaults(i, edoc, source) for i, edoc in enumerate(doc["edges"])]
        plan = decode(typed, cls, source=source, error=PlanError, fix=PLAN_FIX, where=where, mapping="an object")
        plan.stages = stages
        plan._check_values(source)
        return plan

    def _check_values(self, source: str) -> None:
        """What the types do not say: ranges, finite numbers, sums, one entry per edge."""
        for name, stage in self.stages.items():
            where = f"{source}: stage {name!r}"
            placement, instances = stage.placement, stage.instances
            if not all(0 <= v <= MAX_INSTANCES for v in placement.values()):
                raise PlanError(f"{where}: placement must map VM names to integers from 0 to {MAX_INSTANCES}")
            if not 1 <= instances <= MAX_INSTANCES:
                shown = str(instances) if len(str(instances)) <= 20 else str(instances)[:17] + "..."
                raise PlanError(f"{where}: instances must be an integer from 1 to {MAX_INSTANCES}, got {shown}")
            if placement and sum(placement.values()) != instances:
                raise PlanError(f"{where}: placement puts {sum(placement.values())} instances on VMs but the stage has "
                                f"{instances}; make the placement counts add up to instances")
            if not _number(stage.memory_mb, high=MAX_MEMORY_MB):
                raise PlanError(f"{where}: memory_mb must be a finite number from 0 to {MAX_MEMORY_MB}")
            if stage.parallelism is not None and stage.parallelism.chosen != instances:
                raise PlanError(f"{where}: parallelism chosen {stage.parallelism.chosen} differs from instances "
                                f"{instances}; make them equal")
        seen: set[tuple[str, str]] = set()
        for edge in self.edges:
            where = f"{source}: edge {edge.src} -> {edge.dst}"
            if (edge.src, edge.dst) in seen:
                raise PlanError(f"{where} is listed twice; keep one entry per edge")
            seen.add((edge.src, edge.dst))
            if not all(_number(v) for v in edge.predicted_s.values()):
                raise PlanError(f"{where}: predicted_s must map methods to finite, non-negative seconds")
        if not 0 <= self.input_bytes <= MAX_INPUT_BYTES:
            raise PlanError(f"{source}: input_bytes must be an integer from 0 to {MAX_INPUT_BYTES} (1 PB)")
        if not all(math.isfinite(v) for v in self.predicted.values()):
            raise PlanError(f"{source}: predicted must be an object of finite numbers")

    @classmethod
    def load(cls, path: Path) -> Plan:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise PlanError(f"cannot read plan file {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise PlanError(f"plan file {path} is not text; give the JSON written by `sonic plan APP --json`") from None
        if len(text) > MAX_PLAN_CHARS:
            raise PlanError(f"plan file {path} is {len(text)} characters, more than any plan; "
                            "give the JSON written by `sonic plan APP --json`")
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError(f"plan file {path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
        except RecursionError:
            raise PlanError(f"plan file {path} is nested too deeply to be a plan; "
                            "give the JSON written by `sonic plan APP --json`") from None
        return cls.from_json(doc, source=str(path))

    def check(self, app: App, vm_names: list[str] | None = None) -> Plan:
        """Check the plan fits ``app`` (and the cluster's VMs when given)."""
        if self.app != app.name:
            raise PlanError(f"plan is for app {self.app!r}, not {app.name!r}; make one with `sonic plan {app.name} --json`")
        for name in app.topological_order():
            if name not in self.stages:
                raise PlanError(f"plan has no entry for stage {name!r}; add it under \"stages\"")
        for name in self.stages:
            if name not in app.stages:
                raise PlanError(f"plan names stage {name!r}, which app {app.name!r} does not have")
        wanted = {(e.src, e.dst) for e in app.edges()}
        given = {(e.src, e.dst) for e in self.edges}
        for src, dst in sorted(wanted - given):
            raise PlanError(f"plan has no method for edge {src} -> {dst}; add it to \"edges\"")
        for src, dst in sorted(given - wanted):
            raise PlanError(f"plan has edge {src} -> {dst}, which app {app.name!r} does not have")
        if vm_names is not None:
            known = set(vm_names)
            for name, stage in self.stages.items():
                for vm in stage.placement:
                    if vm not in known:
                        raise PlanError(
                            f"stage {name!r} is placed on unknown VM {vm!r}; the cluster has {', '.join(sorted(known))}"
                        )
        return self


#: How a type error in a plan file ends: the fix.
PLAN_FIX = "see `sonic plan APP --json` for the format"


def _stage_defaults(sdoc: Any) -> Any:
    """A stage entry with its defaults filled (``instances``: the placement total) and its
    parallelism left out (:meth:`ParallelismChoice.from_json` checks and decodes it)."""
    if not isinstance(sdoc, dict):
        return sdoc  # msgspec names it: must be an object
    sdoc = {k: v for k, v in sdoc.items() if k != "parallelism"}
    placement = sdoc.get("placement", {})
    if "instances" not in sdoc and isinstance(placement, dict) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in placement.values()):
        sdoc["instances"] = sum(placement.values())
    return sdoc


def _edge_defaults(index: int, edoc: Any, source: str) -> Any:
    """An edge entry with its defaults filled; an unknown (unregistered) method is named with
    the allowed ones. A registered extra method is handed to msgspec as its identity's fields,
    which it decodes into the :class:`~sonic.passing.MethodId` (an equal one) of ``PlanMethod``."""
    if not isinstance(edoc, dict) or not {"src", "dst", "method"} <= set(edoc):
        raise PlanError(f"{source}: edge #{index} must be an object with src, dst and method")
    label = (f"edge {edoc['src']} -> {edoc['dst']}" if isinstance(edoc["src"], str) and isinstance(edoc["dst"], str)
             else f"edge #{index}")
    method = plan_method(edoc["method"], where=f"{source}: {label}")
    if isinstance(method, PassingMethod):
        return {"pattern": "", **edoc}
    return {"pattern": "", **edoc, "method": {"name": method.name, "wire": method.wire}}


def _plan_where(doc: dict[str, Any]) -> Callable[[list[str | int]], str]:
    """How plan messages name the path msgspec reports: ``stage 'map': instances``,
    ``edge #0 split -> map: predicted_s``, ``"input_bytes"``."""
    def where(path: list[str | int]) -> str:
        head, rest = (path[0], path[1:]) if path else ("", [])
        if head == "stages" and rest:
            name, inner = rest[0], rest[1:]
            return f"stage {name!r}" + (f": {dotted(inner)}" if inner else "")
        if head == "edges" and rest and isinstance(rest[0], int):
            index, inner = rest[0], rest[1:]
            edges = doc.get("edges")
            edoc = edges[index] if isinstance(edges, list) and index < len(edges) else None
            label = f"edge #{index}"
            if isinstance(edoc, dict) and isinstance(edoc.get("src"), str) and isinstance(edoc.get("dst"), str):
                label += f" {edoc['src']} -> {edoc['dst']}"
            return label + (f": {dotted(inner)}" if inner else "")
        return f'"{head}"' + (dotted(rest) if rest and not isinstance(rest[0], str) else
                              ("." + dotted(rest) if rest else "")) if head else "the plan"
    return where


def fixed_plan(app: App, method: PassingMethod, vm_names: list[str], *, input_bytes: int = 0) -> Plan:
    """A plan with one method on every edge and instances spread over all VMs.

    Used before a planner exists for a cluster and by tests; the planner's baselines
    (``--strategy remote|vm|direct``) replace it once predictions are available.
    """
    stages = {name: StagePlan(len(vm_names), {vm: 1 for vm in vm_names}) for name in app.topological_order()}
    edges = [EdgePlan(e.src, e.dst, e.pattern.value, method) for e in app.edges()]
    return Plan(app.name, input_bytes, "latency", method.value, stages, edges)
