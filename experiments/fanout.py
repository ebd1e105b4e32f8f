"""Fanout crossover (Sonic's motivating figure): one broadcast edge, fanout swept, at two VM
link bandwidths.

For every fanout F the synthetic app (:mod:`experiments.synthetic`) runs once as a probe
(all-remote plan, untrusted prediction); its measured per-stage parameters
(``AppPrediction.from_run``) are what the planner plans from, on the calibrated cluster:
the three fixed-method baselines (``vm``, ``direct``, ``remote``, placement optimised by the
same planner, as in ``sonic plan --strategy``) and ``sonic`` (free choice). Each plan is then
executed ``runs`` times, interleaved. Outputs:

* ``results/fanout.csv``: one row per run (bandwidth, fanout, strategy, run, measured and
  predicted latency, method and placement);
* ``results/fanout_planner.csv``: per (bandwidth, fanout) the planner's choice, the
  measured-best method, their latencies and the predicted latency of every method;
* ``figures/fanout_crossover.png``.

The "effective" method of a plan: a plan whose consumers all run on the producer's VM reads
the object in place whatever the method label says (the scheduler serves co-located inputs
locally), so it is VM-Storage; one whose consumers are all elsewhere is the method named.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments import synthetic
from experiments.common import (
    MB,
    OUT,
    NetSettings,
    RunRecord,
    calibrate,
    calibration_row,
    cluster,
    log,
    matplotlib_pyplot,
    median,
    plan,
    read_csv,
    write_csv,
)
from sonic.plan import PassingMethod, Plan
from sonic.workflows.planning import untrusted_prediction
from sonic.prediction import AppPrediction

NAME = "fanout"
METHODS = ("vm", "direct", "remote")
STRATEGIES = (*METHODS, "sonic")


def config(quick: bool) -> dict[str, Any]:
    return {
        "bandwidths": [200.0, 800.0] if quick else [200.0, 400.0, 800.0],
        "fanouts": [1, 2, 4, 8, 16] if quick else [1, 2, 3, 4, 6, 8, 12, 16],
        "runs": 1 if quick else 3,
        "object_bytes": 4 * MB,
        "compute_s": 1.0,
        "vms": 9,
        "cores": 2,
        "mode": "netns",
    }


def effective_method(p: Plan) -> str:
    producer = p.stages["produce"].placement
    consumer = p.stages["consume"].placement
    method = p.edges[0].method.value
    if set(consumer) <= set(producer) and len(producer) == 1:
        return "vm"
    return method


def run(quick: bool = False, cfg: dict[str, Any] | None = None) -> dict[str, Any]:
    cfg = {**config(quick), **(cfg or {})}
    rows: list[dict[str, Any]] = []
    choices: list[dict[str, Any]] = []
    calibrations: list[dict[str, Any]] = []
    state = OUT.state / NAME
    state.mkdir(parents=True, exist_ok=True)
    input_path = synthetic.write_input(state / "input.json", cfg["object_bytes"], cfg["compute_s"])
    for mbps in cfg["bandwidths"]:
        settings = NetSettings(vms=cfg["vms"], cores_per_vm=cfg["cores"], vm_mbps=mbps, mode=cfg["mode"])
        with cluster(settings, state / f"cluster-{int(mbps)}") as (spec, cluster_file, eff):
            spec = calibrate(cluster_file, quick=quick)
            calibrations.append(calibration_row(spec, experiment=NAME, vm_mbps=mbps, settings=eff.describe()))
            synthetic.install_on_cluster(spec)
            from sonic.workflows.session import open_coordinator

            coord = open_coordinator(spec)
            try:
                for fanout in cfg["fanouts"]:
                    rows_f, choice = _one_fanout(coord, spec, fanout, input_path, mbps, cfg)
                    rows += rows_f
                    choices.append(choice)
                    write_csv(OUT.results / "fanout.csv", rows)
                    write_csv(OUT.results / "fanout_planner.csv", choices)
            finally:
                coord.close()
    write_csv(OUT.results / "fanout_calibration.csv", calibrations)
    figure()
    return {"rows": len(rows)}


def _one_fanout(coord: Any, spec: Any, fanout: int, input_path: Path, mbps: float,
                cfg: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    app = synthetic.build(fanout)
    app_spec = synthetic.spec()
    probe_plan = plan(app, untrusted_prediction(app, input_path.stat().st_size), spec, "remote")
    probe = coord.execute(app, app_spec, input_path, probe_plan)
    if not probe.output_ok:
        raise RuntimeError(f"fanout probe F={fanout} failed validation: {probe.output_detail}")
    measured = AppPrediction.from_run(probe)
    plans = {s: plan(app, measured, spec, s) for s in STRATEGIES}
    rows: list[dict[str, Any]] = []
    for r in range(cfg["runs"]):
        for strategy in STRATEGIES:
            p = plans[strategy]
            result = coord.execute(app, app_spec, input_path, p)
            rec = RunRecord.of(result, p, vm_mbps=mbps, fanout=fanout, strategy=strategy, run=r,
                               effective_method=effective_method(p),
                               object_bytes=cfg["object_bytes"], compute_s=cfg["compute_s"])
            rows.append(rec.fields)
            if not result.output_ok:
                log(f"F={fanout} {strategy}: output NOT ok: {result.output_detail}")
    lat = {s: median([row["latency_s"] for row in rows if row["strategy"] == s]) for s in STRATEGIES}
    # The best of the three baselines, named by what it effectively does (a "direct" plan
    # whose consumers all sit on the producer's VM is VM-Storage).
    measured_best = effective_method(plans[min(METHODS, key=lambda m: lat[m])])
    sonic_plan = plans["sonic"]
    predicted = {m: plans[m].predicted["latency_s"] for m in METHODS}
    choice = {
        "vm_mbps": mbps, "fanout": fanout,
        "planner_choice": effective_method(sonic_plan),
        "planner_method_label": sonic_plan.edges[0].method.value,
        "planner_placement": " ".join(f"{vm}:{c}" for vm, c in sorted(sonic_plan.stages["consume"].placement.items())),
        "measured_best": measured_best,
        "predicted_best": effective_method(plans[min(METHODS, key=lambda m: predicted[m])]),
        **{f"measured_{m}_s": lat[m] for m in STRATEGIES},
        **{f"predicted_{m}_s": predicted[m] for m in METHODS},
        "predicted_sonic_s": sonic_plan.predicted["latency_s"],
    }
    log(f"{mbps:g} Mbit/s F={fanout:2d}: measured " + " ".join(f"{s}={lat[s]:.2f}" for s in STRATEGIES)
        + " | predicted " + " ".join(f"{m}={predicted[m]:.2f}" for m in METHODS)
        + f" | planner -> {choice['planner_choice']}, measured best {measured_best}")
    return rows, choice


# ----------------------------------------------------------------------------- analysis
def switch_points(choices: list[dict[str, str]], key: str) -> list[tuple[int, str, str]]:
    """(fanout, from, to) where the method in column ``key`` changes along the sweep."""
    out = []
    ordered = sorted(choices, key=lambda c: int(c["fanout"]))
    for prev, cur in zip(ordered, ordered[1:]):
        if prev[key] != cur[key]:
            out.append((int(cur["fanout"]), prev[key], cur[key]))
    return out


def summary() -> dict[str, Any]:
    """Per bandwidth: the measured and planned method sequences and the switch points."""
    choices = read_csv(OUT.results / "fanout_planner.csv")
    out: dict[str, Any] = {}
    for mbps in sorted({c["vm_mbps"] for c in choices}, key=float):
        cs = sorted((c for c in choices if c["vm_mbps"] == mbps), key=lambda c: int(c["fanout"]))
        fanouts = [int(c["fanout"]) for c in cs]
        measured = [c["measured_best"] for c in cs]
        planned = [c["planner_choice"] for c in cs]
        steps = _step_distance(fanouts, measured, planned)
        crossover = next((int(c["fanout"]) for c in cs if c["measured_best"] == "remote"), None)
        planned_crossover = next((int(c["fanout"]) for c in cs if c["planner_choice"] == "remote"), None)
        out[mbps] = {"fanouts": fanouts, "measured": measured, "planned": planned,
                     "measured_switches": switch_points(cs, "measured_best"),
                     "planned_switches": switch_points(cs, "planner_choice"),
                     "max_step_distance": steps, "remote_from": crossover, "planned_remote_from": planned_crossover,
                     "regret": [float(c["measured_sonic_s"]) / min(float(c[f"measured_{m}_s"]) for m in METHODS)
                                for c in cs]}
    return out


def _step_distance(fanouts: list[int], measured: list[str], planned: list[str]) -> int:
    """For every method region, how many sweep steps apart the measured and planned first
    fanouts are (0 = same point); the maximum over methods that occur in either."""
    worst = 0
    for method in METHODS:
        a = next((i for i, m in enumerate(measured) if m == method), None)
        b = next((i for i, m in enumerate(planned) if m == method), None)
        if a is None and b is None:
            continue
        a = len(fanouts) if a is None else a
        b = len(fanouts) if b is None else b
        worst = max(worst, abs(a - b))
    return worst


def figure() -> Path | None:
    rows = read_csv(OUT.results / "fanout.csv")
    choices = read_csv(OUT.results / "fanout_planner.csv")
    if not rows:
        return None
    plt = matplotlib_pyplot()
    bands = sorted({r["vm_mbps"] for r in rows}, key=float)
    fig, axes = plt.subplots(1, len(bands), figsize=(6.2 * len(bands), 4.6), squeeze=False)
    colours = {"vm": "tab:green", "direct": "tab:blue", "remote": "tab:red", "sonic": "black"}
    for ax, mbps in zip(axes[0], bands):
        sub = [r for r in rows if r["vm_mbps"] == mbps]
        fanouts = sorted({int(r["fanout"]) for r in sub})
        for strategy in STRATEGIES:
            meds, lo, hi = [], [], []
            for f in fanouts:
                vals = [float(r["latency_s"]) for r in sub if r["strategy"] == strategy and int(r["fanout"]) == f]
                m = median(vals)
                meds.append(m)
                lo.append(m - min(vals))
                hi.append(max(vals) - m)
            style = dict(color=colours[strategy], marker="o" if strategy != "sonic" else "*",
                         linestyle="-" if strategy != "sonic" else ":", markersize=6 if strategy != "sonic" else 10)
            ax.errorbar(fanouts, meds, yerr=[lo, hi], capsize=3, label=f"{strategy} (measured)", **style)
        cs = sorted((c for c in choices if c["vm_mbps"] == mbps), key=lambda c: int(c["fanout"]))
        for m in METHODS:
            ax.plot([int(c["fanout"]) for c in cs], [float(c[f"predicted_{m}_s"]) for c in cs],
                    color=colours[m], linestyle="--", alpha=0.5, label=f"{m} (predicted)")
        # Zoom on the Direct/Remote region: VM-Storage's waves leave the chart (its values are in
        # the table of the report).
        others = [float(r["latency_s"]) for r in sub if r["strategy"] != "vm"]
        ymax = max(others) * 1.3 if others else ax.get_ylim()[1]
        ax.set_ylim(0.8 * min(others) if others else 0, ymax)
        for c in cs:
            ax.annotate(c["planner_choice"][0].upper(), (int(c["fanout"]), ymax * 0.97), ha="center", va="top",
                        color=colours[c["planner_choice"]], fontsize=10, fontweight="bold")
        ax.set_xscale("log", base=2)
        ax.set_xticks(fanouts)
        ax.set_xticklabels([str(f) for f in fanouts])
        ax.set_xlabel("fanout (consumers of one broadcast object)")
        ax.set_ylabel("job latency (s)")
        ax.set_title(f"VM links {float(mbps):g} Mbit/s (letters: planner's choice; vm leaves the chart)", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower right", ncol=2)
    fig.tight_layout()
    OUT.figures.mkdir(parents=True, exist_ok=True)
    out = OUT.figures / "fanout_crossover.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


__all__ = ["NAME", "figure", "run", "summary"]
