"""The optimiser: an exact dynamic program over the DAG (Sonic's Viterbi search, generalised).

Sonic ran a Viterbi search over a chain of stages: the state of a stage is what its consumer's
cost depends on (where its outputs live), and the best path to every state is kept. On a DAG a
stage can feed several consumers (branches) and a consumer can have several producers
(joins), so the DP processes stages one at a time in a topological order and keeps, as its
state, the **frontier**: every processed stage that still has an unprocessed consumer.

* Stage state: ``(placement, upload)``. The placement (instances per VM) decides where the
  stage's outputs live, which is all a consumer's fetch cost, its VM-Storage placement and the
  union of VMs billed depend on; ``upload`` says whether its instances upload their outputs
  (they do when any out-edge is Remote-Storage, which lengthens the stage itself).
* DP key: the tuple of states of the frontier stages. When stage C is processed every
  producer of C is on the frontier, so C's time (fetches, waves, upload) is a function of
  the key and of C's own decision (its state and the methods of its in-edges).
* Labels: per key, the Pareto set of partial plans over the quantities the rest of the plan
  can still see: the finish time of every frontier stage, the latest finished sink and - when
  dollars matter - the S3 dollars so far and the number of VMs of each group used so far
  (cost = price of the VMs used x latency + S3). The final objective (latency, dollars,
  latency x dollars) is non-decreasing in each of them and every step is monotone
  (``finish_C = max(producers' finish, cold start) + T_C``; sums; maxima), so a dominated
  label can never lead to a better plan than the label dominating it: the DP is exact with
  respect to the cost model. Joins are handled exactly because both producers' finish times
  and placements are in the key/label when the join is processed; branches because a
  producer stays on the frontier until its last consumer is placed.

The processing order is chosen greedily to keep the frontier small (chains and fork-join
apps keep one or two stages on it). A stage with one consumer uploads exactly when that edge
is Remote-Storage, so instead of a key bit its labels carry its finish time without and with
the upload and the consumer picks one; with several consumers the upload bit is in the key
(an upload no consumer uses is allowed but dominated).

Branch and bound (still exact): every label also carries a lower bound on the final latency,
``max(finish_s + h_s)`` over the stages placed so far, where ``h_s`` is the longest path
from s to a sink counting each later stage at its least possible time (one wave, no
transfer); dollars are bounded by ``price(VMs used so far) x that bound + S3 so far``. A label
whose bound already breaks the budget or deadline, or is worse than a plan in hand (a
rule-of-thumb plan, :mod:`sonic.planner.incumbent`), is dropped: no completion can win.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sonic.app import App
from sonic.cluster.spec import ClusterSpec
from sonic.errors import InfeasibleError, PlanError
from sonic.passing import PlanMethod
from sonic.plan import OBJECTIVES, STRATEGIES, ParallelismChoice, Plan
from sonic.planner.assemble import assemble_plan
from sonic.planner.cost import Assignment, CostModel, objective_value
from sonic.planner.incumbent import rule_of_thumb_plans
from sonic.planner.methods import in_place, needs_upload
from sonic.planner.placement import Placement, PlacementSpace
from sonic.planner.problem import Problem, WarmSpec, build_problem
from sonic.planner.space import SearchSpace, strategy_spaces
from sonic.prediction import AppPrediction

#: Relative slack when comparing against a budget, deadline or bound (float noise only).
_SLACK = 1e-9


@dataclass(frozen=True)
class Decision:
    """What the DP chose for one stage: its placement, whether it uploads, its in-edge methods."""

    stage: str
    placement: Placement
    upload: bool
    methods: tuple[PlanMethod, ...]


@dataclass(frozen=True)
class Candidate:
    """One complete plan with its predicted latency and dollars."""

    latency_s: float
    cost_usd: float
    assignment: Assignment


@dataclass(frozen=True)
class Bounds:
    """What a partial plan must stay within to be worth completing (``inf``: no limit)."""

    objective: str
    best_value: float = math.inf       # objective value of a plan in hand
    budget: float = math.inf
    deadline: float = math.inf

    @property
    def active(self) -> bool:
        return min(self.best_value, self.budget, self.deadline) < math.inf


# How a label was reached: a linked list of its decisions, the latest first - (parent trace,
# decision placed last); the first stage's parent is None. A plain pair: one is built per label.
_Trace = tuple["_Trace | None", Decision]


class _Label(NamedTuple):
    """One partial plan in the DP: what the rest of the plan can still see, and how to rebuild it.

    The DP keeps labels as plain tuples of these fields in this order (:data:`_RawLabel`):
    building and unpacking a NamedTuple in its innermost loop made a 100-stage plan ~7-10%
    slower. It unpacks them with these names (``for finishes, sink_finish, ... in labels``);
    a complete plan's label is named when it is read (:meth:`_Optimiser._candidate`).
    """

    finishes: tuple[float, ...]  # frontier finish times, two per stage: without and with its upload
    sink_finish: float          # latest finish time of a sink placed so far (the latency so far)
    s3_usd: float               # S3 dollars so far (uploads, downloads, source reads)
    used: tuple[int, ...]       # VMs used so far per placement group (the first used[g] of group g)
    lower_bound: float          # lower bound on the final latency: max(finish_s + h_s) so far
    trace: _Trace | None        # the decisions so far (None: no stage placed yet)


# A label as the DP builds and keeps it: _Label's fields as a plain tuple.
_RawLabel = tuple[tuple[float, ...], float, float, tuple[int, ...], float, _Trace | None]


class _Move(NamedTuple):
    """One decision for the stage being placed, given its producers' states, with its costs.

    Unpacked in the hot loop (``for reads, placement, ... in moves``): keep the field order.
    """

    reads: tuple[int, ...]      # indices into a label's finishes of the producer finish times it waits for
    placement: Placement        # the stage's placement
    upload: bool                # whether the stage uploads its outputs (a key bit)
    decision: Decision          # the same choice, as recorded in the trace
    stage_s: float              # the stage's time from its start (with the upload when ``upload``)
    with_upload_s: float        # its time with the upload (the "with upload" finish of a deferred stage)
    ready_s: float              # earliest start: the cold start when a VM it uses is cold, else 0
    added_usd: float            # S3 dollars it adds (its downloads, source reads, uploads it causes)
    group_use: tuple[int, ...]  # VMs its placement uses per placement group


def _carrier(indices: list[int]) -> Callable[[tuple[float, ...]], tuple[float, ...]]:
    """A fast ``lambda t: tuple(t[i] for i in indices)``."""
    if not indices:
        return lambda _: ()
    if len(indices) == 1:
        only = indices[0]
        return lambda t: (t[only],)
    return operator.itemgetter(*indices)  # type: ignore[return-value]


def processing_order(problem: Problem) -> list[str]:
    """A topological order that keeps the frontier small (greedy; ties by topological order)."""
    rank = {s: i for i, s in enumerate(problem.order)}
    remaining = {s: len(problem.out_edges[s]) for s in problem.order}
    done: set[str] = set()
    order: list[str] = []
    live = 0
    while len(order) < len(problem.order):
        ready = [s for s in problem.order if s not in done and all(e.src in done for e in problem.in_edges[s])]

        # Called only within this iteration, so reading `live` late is reading the current value.
        def frontier_after(s: str) -> int:
            closing = sum(1 for e in problem.in_edges[s] if remaining[e.src] == 1)
            return live - closing + (1 if problem.out_edges[s] else 0)  # noqa: B023

        best = min(ready, key=lambda s: (frontier_after(s), rank[s]))
        live = frontier_after(best)
        for e in problem.in_edges[best]:
            remaining[e.src] -= 1
        done.add(best)
        order.append(best)
    return order


def remaining_path(problem: Problem) -> dict[str, float]:
    """``h_s``: the least time any plan needs after stage s ends (critical path of lower bounds:
    every later stage takes at least one wave of ``o_inv + x t``, ``x`` the smallest compute
    factor of any VM: a VM faster than the profiling machine may run it)."""
    overhead = problem.calibration.invoke_overhead_s
    fastest = min((vm.compute_factor for vm in problem.vms), default=1.0)
    h: dict[str, float] = {}
    for name in reversed(problem.order):
        h[name] = max((overhead + fastest * problem.stages[e.dst].time_s + h[e.dst] for e in problem.out_edges[name]),
                      default=0.0)
    return h


@dataclass(frozen=True)
class _Step:
    """What the DP needs to know about the stage it is placing."""

    stage: str
    positions: tuple[int, ...]                          # frontier index of each producer
    methods: tuple[tuple[PlanMethod, ...], ...]         # allowed per in-edge
    follows: tuple[tuple[bool, ...], ...]               # per allowed method: in place (consumer follows)
    uploaded: tuple[tuple[bool, ...], ...]              # per allowed method: needs the producer's upload
    producer_modes: tuple[str, ...]                     # upload mode of each producer
    uploads: tuple[bool, ...]                           # upload options kept in the key
    deferred: bool                                      # upload decided by the only consumer


class _Optimiser:
    def __init__(self, problem: Problem, space: PlacementSpace, model: CostModel, track_cost: bool) -> None:
        self.problem = problem
        self.space = space
        self.model = model
        self.track_cost = track_cost
        self.group_prices = tuple(problem.vms[g.members[0]].price_per_hour for g in space.groups)
        self._group_use: dict[int, tuple[int, ...]] = {}
        self._prices: dict[tuple[int, ...], float] = {}
        self.h = remaining_path(problem)

    def group_use(self, p: Placement) -> tuple[int, ...]:
        found = self._group_use.get(p.id)
        if found is None:
            use = [0] * len(self.space.groups)
            for v in p.vms:
                use[self.space.group_of[v]] += 1
            found = tuple(use)
            self._group_use[p.id] = found
        return found

    def price(self, use: tuple[int, ...]) -> float:
        """Dollars per hour of the VMs used (the first ``use[g]`` VMs of every group g)."""
        found = self._prices.get(use)
        if found is None:
            found = self._prices[use] = sum(p * k for p, k in zip(self.group_prices, use))
        return found

    # ------------------------------------------------------------------ the DP
    def solve(self, ss: SearchSpace, bounds: Bounds) -> list[Candidate]:
        problem, space = self.problem, self.space
        remaining = {s: len(problem.out_edges[s]) for s in problem.order}
        # How a stage's upload decision is carried: "key" - in the DP key (several consumers
        # share it); "deferred" - one consumer decides it, so the label keeps the stage's finish
        # time without and with upload (both exact); "none" - no consumer may use a method that
        # needs the upload (Remote-Storage).
        mode: dict[str, str] = {}
        for s in problem.order:
            outs = problem.out_edges[s]
            if not any(needs_upload(m) for e in outs for m in ss.methods[e.index]):
                mode[s] = "none"
            else:
                mode[s] = "deferred" if len(outs) == 1 else "key"
        bounded = bounds.active
        track_cost = self.track_cost
        objective, price = bounds.objective, self.price
        cap_value = bounds.best_value * (1 + _SLACK)
        cap_usd = bounds.budget * (1 + _SLACK)
        cap_s = bounds.deadline * (1 + _SLACK)
        live: list[str] = []
        zero = tuple(0 for _ in space.groups)
        table: dict[tuple[tuple[Placement, bool], ...], list[_RawLabel]] = {(): [
            _Label(finishes=(), sink_finish=0.0, s3_usd=0.0, used=zero, lower_bound=0.0, trace=None)]}
        for name in processing_order(problem):
            ins = problem.in_edges[name]
            pos = [live.index(e.src) for e in ins]
            for e in ins:
                remaining[e.src] -= 1
            keep = [i for i, s in enumerate(live) if remaining[s] > 0]
            keep2 = [j for i in keep for j in (2 * i, 2 * i + 1)]  # labels hold (finish, finish with upload)
            carry = _carrier(keep2)
            has_out = bool(problem.out_edges[name])
            deferred = mode[name] == "deferred"
            h_here = self.h[name]
            allowed = tuple(ss.methods[e.index] for e in ins)
            step = _Step(name, tuple(pos), allowed,
                         tuple(tuple(in_place(m) for m in ms) for ms in allowed),
                         tuple(tuple(needs_upload(m) for m in ms) for ms in allowed),
                         tuple(mode[e.src] for e in ins),
                         ss.upload_options[name] if mode[name] == "key" else (False,), deferred)
            new_table: dict[tuple[tuple[Placement, bool], ...], list[_RawLabel]] = {}
            # Keys that differ only in frontier stages this stage does not read share moves.
            moves: dict[tuple[tuple[Placement, bool], ...], list[_Move]] = {}
            for key, labels in table.items():
                prods = tuple(key[i] for i in pos)
                found = moves.get(prods)
                if found is None:
                    found = moves[prods] = self._moves(step, ss, prods)
                kept_key = tuple(key[i] for i in keep)
                for (reads, placement, upload, decision, stage_s, with_upload_s, ready_s, added_usd,
                     group_use) in found:
                    new_key = kept_key + ((placement, upload),) if has_out else kept_key
                    bucket = new_table.setdefault(new_key, [])
                    for finishes, sink_finish, s3_usd, used, lower_bound, trace in labels:
                        start = ready_s
                        for j in reads:
                            if finishes[j] > start:
                                start = finishes[j]
                        fin = start + stage_s
                        if used != group_use:
                            used = tuple(a if a >= b else b for a, b in zip(used, group_use))
                        if fin + h_here > lower_bound:
                            lower_bound = fin + h_here
                        if bounded:
                            if lower_bound > cap_s:
                                continue
                            if track_cost:
                                usd = price(used) * lower_bound / 3600.0 + s3_usd + added_usd
                                if usd > cap_usd or objective_value(objective, lower_bound, usd) > cap_value:
                                    continue
                            elif lower_bound > cap_value:
                                continue
                        new_finishes = carry(finishes)
                        if has_out:
                            new_finishes += (fin, start + with_upload_s if deferred else fin)
                        elif fin > sink_finish:
                            sink_finish = fin
                        # A _RawLabel: _Label's fields in order.
                        bucket.append((new_finishes, sink_finish, s3_usd + added_usd, used, lower_bound,
                                       (trace, decision)))
            table = {k: self._prune(v) for k, v in new_table.items() if v}
            live = [live[i] for i in keep] + ([name] if has_out else [])
        return [self._candidate(_Label._make(label)) for label in table.get((), [])]

    def _moves(self, step: _Step, ss: SearchSpace, prods: tuple[tuple[Placement, bool], ...]) -> list[_Move]:
        """Every decision for ``step.stage`` given its producers' states, with its costs."""
        problem, model, space = self.problem, self.model, self.space
        name, uploads = step.stage, step.uploads
        ins = problem.in_edges[name]
        n = problem.stages[name].instances
        cold_start = problem.calibration.cold_start_s
        upload_usd = model.upload_dollars(name)
        out: list[_Move] = []
        # By index into the in-edges' allowed methods, so the methods' flags come with them.
        for choice in itertools.product(*(range(len(ms)) for ms in step.methods)):
            methods = tuple(ms[k] for ms, k in zip(step.methods, choice))
            forced: Placement | None = None
            ok = True
            select: list[int] = []
            producer_usd = 0.0
            for e, k, follows, uploaded, (pp, up), i, pmode in zip(
                    ins, choice, step.follows, step.uploaded, prods, step.positions, step.producer_modes):
                if uploaded[k] and pmode == "key" and not up:
                    ok = False  # the producer did not upload its outputs
                    break
                if uploaded[k] and pmode == "deferred":
                    select.append(2 * i + 1)
                    producer_usd += model.upload_dollars(e.src)
                else:
                    select.append(2 * i)
                if follows[k]:
                    f = space.follow(e.pattern, pp, n)
                    if f is None or (forced is not None and f is not forced):
                        ok = False
                        break
                    forced = f
            if not ok:
                continue
            if forced is not None:
                if not model.fits(name, forced):
                    continue
                candidates: Sequence[Placement] = (forced,)
            else:
                candidates = ss.placements[name]
            chosen = tuple(select)
            inputs = [(e, m, pp) for e, m, (pp, _) in zip(ins, methods, prods)]
            for pc in candidates:
                # The same function the brute force's evaluate() uses, so both score alike.
                plain, with_upload = model.stage_seconds(name, pc, inputs)
                ready = cold_start if model.cold_vms(name, pc) else 0.0
                s3_in = model.source_dollars(name, pc) + producer_usd + sum(
                    model.download_dollars(e, m, pp, pc) for e, m, (pp, _) in zip(ins, methods, prods))
                use = self.group_use(pc)
                for upload in uploads:
                    # By position (keywords cost ~2x as much, and there are many moves): in field order
                    # reads, placement, upload, decision, stage_s, with_upload_s, ready_s, added_usd, group_use.
                    out.append(_Move(chosen, pc, upload, Decision(name, pc, upload, methods),
                                     with_upload if upload else plain, with_upload, ready,
                                     s3_in + upload_usd if upload else s3_in, use))
        return out

    def _candidate(self, label: _Label) -> Candidate:
        decisions: list[Decision] = []
        trace = label.trace
        while trace is not None:
            trace, decision = trace
            decisions.append(decision)
        placements = {d.stage: d.placement for d in decisions}
        methods: dict[tuple[str, str], PlanMethod] = {}
        for d in decisions:
            for e, m in zip(self.problem.in_edges[d.stage], d.methods):
                methods[(e.src, e.dst)] = m
        latency = label.sink_finish
        cost = self.price(label.used) * latency / 3600.0 + label.s3_usd
        return Candidate(latency, cost, Assignment(placements, methods))

    def _prune(self, labels: list[_RawLabel]) -> list[_RawLabel]:
        """Keep the Pareto-minimal labels (first of equals; ties broken by dollars).

        Compared: frontier finish times and the latest sink finish; with dollars tracked also
        the S3 dollars and the VMs used per group. Sorted lexicographically, a label can only
        be dominated by one kept before it.
        """
        if len(labels) <= 1:
            return labels
        price = self.price
        # (compared vector, tie-breakers..., index into labels): the tie-breakers depend on track_cost
        ranked: list[tuple[Any, ...]]
        if self.track_cost:
            ranked = sorted(((finishes + (sink_finish, s3_usd) + used, i)
                             for i, (finishes, sink_finish, s3_usd, used, _, _) in enumerate(labels)))
        else:
            ranked = sorted(((finishes + (sink_finish,), price(used), s3_usd, i)
                             for i, (finishes, sink_finish, s3_usd, used, _, _) in enumerate(labels)))
        kept: list[_RawLabel] = []
        kept_vectors: list[tuple[float, ...]] = []
        for item in ranked:
            vec = item[0]
            dominated = False
            for k in kept_vectors:
                for a, b in zip(k, vec):
                    if a > b:
                        break
                else:
                    dominated = True
                    break
            if not dominated:
                kept.append(labels[item[-1]])
                kept_vectors.append(vec)
        return kept


# ---------------------------------------------------------------------- selection
def select(candidates: Sequence[Candidate], objective: str, budget: float | None,
           deadline: float | None) -> Candidate:
    """The best candidate meeting the constraints, or :class:`InfeasibleError` naming alternatives."""
    if not candidates:
        raise InfeasibleError("no plan exists for this app on this cluster")

    def meets(c: Candidate) -> bool:
        return ((budget is None or c.cost_usd <= budget * (1 + _SLACK))
                and (deadline is None or c.latency_s <= deadline * (1 + _SLACK)))

    feasible = [c for c in candidates if meets(c)]
    if feasible:
        secondary = {"latency": lambda c: c.cost_usd, "cost": lambda c: c.latency_s,
                     "perf-per-dollar": lambda c: c.latency_s}[objective]
        return min(feasible, key=lambda c: (objective_value(objective, c.latency_s, c.cost_usd), secondary(c)))
    raise InfeasibleError(_infeasible_message(candidates, budget, deadline))


def _up(value: float, digits: int = 4) -> str:
    """``value`` rounded *up* to ``digits`` significant digits, so quoting it back is enough."""
    if value <= 0 or not math.isfinite(value):
        return f"{value:g}"
    exponent = math.floor(math.log10(value)) - digits + 1
    return f"{math.ceil(value / 10.0 ** exponent - 1e-9) * 10.0 ** exponent:.{max(0, -exponent)}f}"


def _infeasible_message(candidates: Sequence[Candidate], budget: float | None, deadline: float | None) -> str:
    cheapest = min(candidates, key=lambda c: (c.cost_usd, c.latency_s))
    fastest = min(candidates, key=lambda c: (c.latency_s, c.cost_usd))

    def show(c: Candidate) -> str:
        return f"{_up(c.latency_s)} s for ${_up(c.cost_usd)}"

    wanted = " and ".join(part for part in (
        f"costs at most ${budget:.4g}" if budget is not None else "",
        f"finishes within {deadline:.4g} s" if deadline is not None else "") if part)
    if budget is not None and deadline is not None:
        within_budget = [c for c in candidates if c.cost_usd <= budget * (1 + _SLACK)]
        within_deadline = [c for c in candidates if c.latency_s <= deadline * (1 + _SLACK)]
        options = []
        if within_budget:
            options.append("fastest within budget: " + show(min(within_budget, key=lambda c: c.latency_s)))
        if within_deadline:
            options.append("cheapest within deadline: " + show(min(within_deadline, key=lambda c: c.cost_usd)))
        if not options:
            options = [f"cheapest plan: {show(cheapest)}", f"fastest plan: {show(fastest)}"]
        return f"no plan {wanted}; " + "; ".join(options) + "; relax --budget or --deadline"
    if budget is not None:
        return (f"no plan {wanted}; the cheapest plan takes {show(cheapest)}: "
                f"raise --budget to at least ${_up(cheapest.cost_usd)}")
    assert deadline is not None
    return (f"no plan {wanted}; the fastest plan takes {show(fastest)}: "
            f"raise --deadline to at least {_up(fastest.latency_s)} s")


# ---------------------------------------------------------------------- entry point
def optimise(problem: Problem, space: PlacementSpace, model: CostModel, *, objective: str = "latency",
             strategy: str = "sonic", budget: float | None = None, deadline: float | None = None,
             prune: bool = True) -> tuple[Candidate, list[SearchSpace]]:
    """Run the DP on the strategy's search space(s); return the selected candidate.

    ``prune=False`` switches branch and bound off (same answer, slower; for tests).
    """
    track_cost = objective != "latency" or budget is not None
    opt = _Optimiser(problem, space, model, track_cost)
    spaces = strategy_spaces(problem, space, model, "sonic" if strategy == "oracle" else strategy)
    seeds: list[Candidate] = []
    for ss in spaces:
        for assignment, ev in rule_of_thumb_plans(problem, space, model, ss):
            seeds.append(Candidate(ev.latency_s, ev.cost_usd, assignment))
    bounds = Bounds(objective,
                    budget=math.inf if budget is None else budget,
                    deadline=math.inf if deadline is None else deadline)
    if prune:
        try:
            seed = select(seeds, objective, budget, deadline)
            bounds = Bounds(objective, objective_value(objective, seed.latency_s, seed.cost_usd),
                            bounds.budget, bounds.deadline)
        except InfeasibleError:
            pass  # no seed meets the constraints: prune on the constraints alone
    else:
        bounds = Bounds(objective)
    # Seeds go last: on a tie the DP's plan wins (it prefers VM-Storage, then Direct).
    candidates = [c for ss in spaces for c in opt.solve(ss, bounds)] + seeds
    try:
        return select(candidates, objective, budget, deadline), spaces
    except InfeasibleError:
        if not bounds.active:
            raise
    # Nothing meets the request: plan again without bounds to name the best alternatives.
    everything = [c for ss in spaces for c in opt.solve(ss, Bounds(objective))] + seeds
    return select(everything, objective, budget, deadline), spaces


def check_request(objective: str, strategy: str, budget: float | None, deadline: float | None) -> None:
    if objective not in OBJECTIVES:
        raise PlanError(f"objective {objective!r} is not one of {', '.join(OBJECTIVES)}")
    if strategy not in STRATEGIES:
        raise PlanError(f"strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    if budget is not None and not budget > 0:
        raise PlanError(f"budget must be a positive number of dollars, got {budget!r}")
    if deadline is not None and not deadline > 0:
        raise PlanError(f"deadline must be a positive number of seconds, got {deadline!r}")


def make_plan(app: App, prediction: AppPrediction, cluster: ClusterSpec, *, objective: str = "latency",
              strategy: str = "sonic", budget: float | None = None, deadline: float | None = None,
              warm: WarmSpec = None) -> Plan:
    """Plan ``app`` for the predicted parameters on ``cluster`` (pure: no I/O).

    ``objective``: latency | cost | perf-per-dollar; ``budget`` (USD) and ``deadline`` (s)
    constrain the plan; ``strategy``: sonic (the optimiser), remote | vm | direct (baselines:
    method fixed on every edge, placement still optimised), oracle (the optimiser, for a
    prediction built from a measured run). ``warm``: warm worker processes per VM name (or
    names of fully warm VMs); default none, so every VM used pays one cold start.
    Raises :class:`InfeasibleError` naming the best alternative when nothing meets the request.
    An app with elastic stages, planned over candidate instance counts, goes through
    :func:`sonic.planner.elastic.make_elastic_plan`, which calls this module's optimiser per option.
    """
    check_request(objective, strategy, budget, deadline)
    problem = build_problem(app, prediction, cluster, warm)
    space = PlacementSpace(problem.vms)
    model = CostModel(problem, space)
    best, _ = optimise(problem, space, model, objective=objective, strategy=strategy, budget=budget,
                       deadline=deadline)
    plan = assemble_plan(problem, space, model, best.assignment, objective=objective, strategy=strategy,
                         warm_given=warm is not None)
    # An elastic stage runs the count its plan was costed for: without a chosen count the
    # runtime would fall back to the data-determined one (sort at 256 MB: planned and predicted
    # for 10 maps, run with 64), and the plan would describe a job that never ran.
    for name, bounds in app.elastic_stages().items():
        stage = plan.stages[name]
        if stage.parallelism is None and bounds.min <= stage.instances <= bounds.max:
            stage.parallelism = ParallelismChoice(bounds.min, bounds.max, stage.instances)
    return plan
