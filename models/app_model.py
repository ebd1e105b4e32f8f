"""Per-stage parameter models of one application, and their propagation through the DAG.

For every stage four :class:`~models.metric.MetricModel` are fitted on the profile:

=============  ==========================  =====================================
metric         regressed on                target
=============  ==========================  =====================================
memory         instance input bytes        instance peak memory (MB)
time           instance input bytes        instance wall time, warm runs (s)
               (+ outputs written)
output_bytes   instance input bytes        bytes written by the instance
fanout         app input bytes             instance count of the stage in a run
=============  ==========================  =====================================

Instance input bytes (not app input bytes) are the main regressor of the per-instance
metrics because that is what an instance actually processes: it stays right when the
fanout or the routing of upstream stages changes, and it is what the runtime measures per
instance. Candidate forms with *features* additionally see the app input bytes (a reducer's
fan-in, a mapper's number of partitions grow with the whole job, not with its own input)
and the app's declared input features (``feat_*`` columns, where every row has them);
cross-validation picks them only when they clearly help (see :mod:`models.metric`).
An instance feeding a shuffle writes one output per consumer instance (sort's map writes
R partitions), and each file costs time of its own: at 64 x 64 a map of 0.5 MB took 39 ms
where one of 2 MB with 16 outputs took 9 ms. Where the app's DAG gives a stage scatter
consumers and its outputs per instance vary in the profile, the time model may also regress
on the outputs written, and the outputs per instance are predicted from the consumers'
instance count (:class:`OutputsPerInstance`) -- a plan decision for elastic stages, so the
planner sees what a larger reduce count costs the maps.
Wall time is summarised by its lower quartile (``time_statistic``): interference from other
jobs only ever adds time, so the lower quartile is the stable estimate of a stage's own
cost; the upper tail goes into ``Estimate.hi``.
Prediction walks the DAG from the app input (:meth:`AppModel.predict`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.evaluation import HoldoutScore, holdout_score
from models.forms import EXTRAPOLATION_FACTOR, default_candidates
from models.metric import MetricModel
from models.persist import load_model, save_model
from profiler.schema import COLUMNS, FEATURE_PREFIX, feature_columns
from sonic.app import App, Pattern
from sonic.errors import NotFittedError, UserInputError
from sonic.execution import MEASUREMENT_SEMANTICS
from sonic.prediction import AppPrediction, Estimate, StagePrediction

#: Report order and the profile column each per-instance metric is read from. ``_memory`` is
#: the instance's own memory plus the app's resident baseline (see :meth:`AppModel.fit`).
INSTANCE_METRICS: dict[str, str] = {"memory": "_memory", "time": "wall_s", "output_bytes": "output_bytes"}
METRICS: tuple[str, ...] = ("memory", "time", "output_bytes", "fanout")

#: A prediction this many times beyond (or below) what was profiled is an extrapolation the
#: user is warned about (``models.forms.EXTRAPOLATION_FACTOR``, which lines are checked to).


def fix_hint(app: str) -> str:
    return f"run `sonic profile {app}` to measure it"


@dataclass(frozen=True)
class OutputsPerInstance:
    """How many outputs one instance of a stage writes: ``per_consumer`` x the instances of its
    scatter consumers (a shuffle writes one partition per reducer), or ``constant`` (a
    splitter's chunks, a one-file summary), whichever reproduced the profile better."""

    constant: float
    per_consumer: float | None = None
    #: The scatter consumers whose instances ``per_consumer`` multiplies.
    consumers: tuple[str, ...] = ()

    def predict(self, consumer_instances: float) -> float:
        if self.per_consumer is None or consumer_instances <= 0:
            return self.constant
        return self.per_consumer * consumer_instances

    @classmethod
    def fit(cls, outputs: np.ndarray, consumers: np.ndarray, names: tuple[str, ...] = ()) -> OutputsPerInstance:
        """``outputs``: per-run median outputs per instance; ``consumers``: the instances of
        the scatter consumers ``names`` in that run (0 where unknown)."""
        constant = float(np.median(outputs))
        known = (consumers > 0) & (outputs > 0)
        if not known.any():
            return cls(constant, consumers=names)
        ratio = float(np.median(outputs[known] / consumers[known]))
        err_ratio = float(np.median(np.abs(ratio * consumers[known] - outputs[known]) / outputs[known]))
        err_constant = float(np.median(np.abs(constant - outputs[known]) / outputs[known]))
        return cls(constant, ratio if err_ratio < err_constant else None, names)


@dataclass
class StageModel:
    """The fitted models of one stage and their held-out scores."""

    stage: str
    metrics: dict[str, MetricModel]
    scores: dict[str, HoldoutScore]
    features: list[str]
    n_sizes: int
    trusted: bool
    cold_start_s: float | None = None
    #: Why the stage is not trusted (empty when it is): the metric, its MAPE and the limit,
    #: or the number of sizes profiled.
    untrusted_reason: str = ""
    #: The stage's total output per run (all instances) as a function of its total input:
    #: chosen over per-instance output x instances when it predicts held-out totals better
    #: (aggregations whose per-instance output shrinks as the fanout grows).
    total_output: MetricModel | None = None
    #: (min, max) instance input bytes seen in training.
    input_range: tuple[float, float] = (0.0, 0.0)
    #: Whether ``total_output`` predicted held-out totals better than the per-instance model.
    total_output_preferred: bool = False
    #: Outputs one instance writes, when the time model regresses on them (else ``None``).
    outputs: OutputsPerInstance | None = None

    def design(self, rows: pd.DataFrame, metric: str) -> np.ndarray:
        """The regressors of ``metric`` for instance ``rows`` (profile columns), in the order
        its model was fitted on: input bytes, app input bytes, [outputs written,] features."""
        fcols = [FEATURE_PREFIX + f for f in self.features]
        if any(c not in rows.columns for c in fcols):
            fcols = []
        outputs = ["n_outputs"] if metric == "time" and self.outputs is not None else []
        return rows[["input_bytes", "app_input_bytes", *outputs, *fcols]].to_numpy(dtype=float)

    def extra(self, metric: str, x_app: float, outputs: float, features: tuple[float, ...] | None
              ) -> tuple[float, ...]:
        """What ``MetricModel.predict_estimate`` takes besides the instance input bytes."""
        head = (x_app, outputs) if metric == "time" and self.outputs is not None else (x_app,)
        return (*head, *features) if features else head

    def uses_total_output(self, with_features: bool) -> bool:
        """Predict output from the total model: preferred, or the per-instance model needs
        features that were not given."""
        if self.total_output is None:
            return False
        return self.total_output_preferred or (self.metrics["output_bytes"].uses_features_ and not with_features)


class AppModel:
    """Models of every stage of app ``app_name``.

    Parameters
    ----------
    app_name : the application whose rows of the profile are used.
    max_mape : a stage is ``trusted`` only if the held-out MAPE of what decides data passing
        (memory, output bytes, fanout) is at most this ...
    max_time_mape : a stage whose execution-time MAPE is above this comes with a warning
        that its predicted latency is uncertain, but stays trusted: a time error moves every
        passing method's latency alike (compute is the same whichever way the bytes travel),
        so it does not make the choice of method unsafe, while a byte, fanout or memory error
        does; sending a noisy millisecond-scale stage's edges through Remote-Storage (the
        untrusted fallback) only ever made runs slower.
    min_sizes : ... and it was profiled on at least this many distinct sizes.
    quantile : quantile of measured/predicted ratios behind ``Estimate.hi``.
    sources : use only rows from these sources (e.g. ``("reference",)``); all by default.
    time_statistic : quantile of pooled wall times a time model predicts (see module doc).
    elastic_stages : stages whose instance count is a plan decision (their fanout does not
        gate trust).
    scatter_consumers : per stage, the stages it feeds by scatter; their instance count
        predicts how many outputs an instance writes (module doc). Unknown stages write a
        constant number of outputs.
    """

    def __init__(self, app_name: str, *, max_mape: float = 0.25, max_time_mape: float = 0.5, min_sizes: int = 3,
                 quantile: float = 0.9, sources: Sequence[str] | None = None,
                 time_statistic: float | str = 0.25, elastic_stages: Sequence[str] = (),
                 scatter_consumers: Mapping[str, Sequence[str]] | None = None) -> None:
        self.app_name = app_name
        self.elastic_stages = elastic_stages
        self.scatter_consumers = scatter_consumers
        self.max_mape = max_mape
        self.max_time_mape = max_time_mape
        self.min_sizes = min_sizes
        self.quantile = quantile
        self.sources = sources
        self.time_statistic = time_statistic

    @classmethod
    def for_app(cls, app: App, **params: Any) -> AppModel:
        """Models of ``app`` with what its definition says about the fit: stages whose
        instance count is a plan decision (``parallelism=``) are ``elastic_stages``."""
        elastic = tuple(name for name, stage in app.stages.items() if stage.parallelism is not None)
        consumers = {name: tuple(e.dst for e in app.out_edges(name) if e.pattern is Pattern.SCATTER)
                     for name in app.stages}
        return cls(app.name, elastic_stages=elastic, scatter_consumers=consumers, **params)

    # ------------------------------------------------------------------ fit
    def fit(self, profile: pd.DataFrame) -> AppModel:
        rows = self._validate_profile(profile)
        # A feature is usable if every row has it and it varies: a constant (a video's fps)
        # carries no information and would only add look-alike candidates.
        self.feature_names_ = [c[len(FEATURE_PREFIX):] for c in feature_columns(rows)
                               if _usable(rows[c].to_numpy(dtype=float))]
        groups = rows["size"].astype("Float64").fillna(rows["app_input_bytes"].astype("Float64"))
        rows = rows.assign(_group=groups.to_numpy(dtype=float))
        # Memory is the instance's own peak above its process's resident baseline (the same
        # whether a forked profiler child or a warm cluster worker ran it), plus one resident
        # baseline for the app: what a slot needs in all, comparable across executors.
        self.worker_memory_mb_ = float(rows["baseline_memory_mb"].median())
        rows = with_memory(rows, self.worker_memory_mb_)
        # The smallest peak of any instance, a little under: what every instance starts with.
        warm = rows[~rows["cold"].astype(bool)]
        self.memory_baseline_ = 0.99 * float((rows if warm.empty else warm)["_memory"].min())
        # Stages in execution order: rows of a run are written in topological order.
        self.stage_order_ = list(dict.fromkeys(rows["stage"].tolist()))
        self.stages_: dict[str, StageModel] = {}
        instances = rows.drop_duplicates(["run_id", "stage"]).set_index(["run_id", "stage"])["instances"]
        for stage in self.stage_order_:
            self.stages_[stage] = self._fit_stage(stage, rows[rows["stage"] == stage], instances)
        # Features as a function of input size: `sonic plan --input-size` has no input file to
        # read them from, so it takes the features an input of that size typically has.
        per_run = rows.drop_duplicates("run_id")
        self.feature_models_ = {
            f: MetricModel(feature_names=()).fit(per_run[["app_input_bytes"]].to_numpy(dtype=float),
                                                 per_run[FEATURE_PREFIX + f].to_numpy(dtype=float),
                                                 groups=per_run["_group"].to_numpy(dtype=float))
            for f in self.feature_names_}
        self.training_ = self._summary(rows)
        return self

    def features_for_size(self, input_bytes: float) -> dict[str, float]:
        """Typical feature values of an input of ``input_bytes``, fitted on the profiled runs."""
        self._check_fitted()
        return {f: m.predict_estimate(float(input_bytes)).mean for f, m in self.feature_models_.items()}

    def _validate_profile(self, profile: pd.DataFrame) -> pd.DataFrame:
        if not isinstance(profile, pd.DataFrame):
            raise TypeError(f"AppModel.fit expects the profile as a pandas DataFrame, got {type(profile).__name__}")
        missing = [c for c in COLUMNS if c not in profile.columns]
        if missing:
            raise UserInputError(f"profile table lacks columns {', '.join(missing)}; build it with profiler.ProfileStore.load")
        rows = profile[(profile["app"] == self.app_name) & profile["error"].isna()]
        # A run whose output failed validation measured something else than the app's work.
        rows = rows[rows["output_ok"].astype(bool)]
        if self.sources is not None:
            rows = rows[rows["source"].isin(list(self.sources))]
        current = rows[rows["semantics"] == MEASUREMENT_SEMANTICS]
        if current.empty and not rows.empty:
            raise NotFittedError(
                f"the measurements of app {self.app_name!r} were taken under an older definition of memory "
                f"and time (semantics {int(rows['semantics'].max())}, this sonic uses {MEASUREMENT_SEMANTICS}); "
                f"{fix_hint(self.app_name)} again")
        if current.empty:
            raise NotFittedError(f"no measurements of app {self.app_name!r} to fit models on; {fix_hint(self.app_name)}")
        return current.reset_index(drop=True)

    def _fit_outputs(self, stage: str, warm: pd.DataFrame, instances: pd.Series) -> OutputsPerInstance | None:
        """The outputs-per-instance model, if the stage's outputs per instance vary (else the
        time model has nothing to learn from them)."""
        consumers = tuple((self.scatter_consumers or {}).get(stage, ()))
        if not consumers or not _usable(warm["n_outputs"].to_numpy(dtype=float)):
            return None
        per_run = warm.groupby("run_id", sort=False)["n_outputs"].median()
        n_consumers = np.array([sum(float(instances.get((run, c), 0)) for c in consumers)
                                for run in per_run.index])
        return OutputsPerInstance.fit(per_run.to_numpy(dtype=float), n_consumers, consumers)

    def _fit_stage(self, stage: str, rows: pd.DataFrame, instances: pd.Series) -> StageModel:
        feats = list(self.feature_names_)
        fcols = [FEATURE_PREFIX + f for f in feats]
        warm = rows[~rows["cold"].astype(bool)]
        if warm.empty:  # only cold runs: better than nothing, and flagged untrusted below
            warm = rows
        outputs = self._fit_outputs(stage, warm, instances)
        shell = StageModel(stage, {}, {}, feats, 0, False, outputs=outputs)
        metrics: dict[str, MetricModel] = {}
        scores: dict[str, HoldoutScore] = {}
        g, r = warm["_group"].to_numpy(dtype=float), warm["run_id"].astype(str).to_numpy()
        for metric, column in INSTANCE_METRICS.items():
            X = shell.design(warm, metric)
            names = ["app_input_bytes", *(["outputs"] if metric == "time" and outputs is not None else []), *feats]
            statistic = self.time_statistic if metric == "time" else 0.5
            # Memory power laws grow on top of the resident baseline every instance has.
            candidates = (default_candidates(X.shape[1] - 1, offset=self.memory_baseline_)
                          if metric == "memory" else None)
            # The app input bytes and the outputs written are known to matter in general;
            # declared app features must earn their place (see MetricModel).
            model = MetricModel(candidates=candidates, quantile=self.quantile, statistic=statistic,
                                feature_names=names, free_features=tuple(range(1, len(names) - len(feats) + 1)))
            y = warm[column].to_numpy(dtype=float)
            scores[metric] = holdout_score(model, X, y, g, r)
            metrics[metric] = model.fit(X, y, groups=g, runs=r)
        total_output, scores["output_bytes"], total_preferred = self._fit_total_output(
            warm, fcols, feats, scores["output_bytes"])
        per_run = rows.drop_duplicates("run_id")
        Xf = per_run[["app_input_bytes", *fcols]].to_numpy(dtype=float)
        yf = per_run["instances"].to_numpy(dtype=float)
        gf = per_run["_group"].to_numpy(dtype=float)
        fanout = MetricModel(quantile=self.quantile, integer=True, feature_names=feats)
        scores["fanout"] = holdout_score(fanout, Xf, yf, gf)
        metrics["fanout"] = fanout.fit(Xf, yf, groups=gf)
        n_sizes = int(np.unique(g).size)
        # An elastic stage's instance count is the plan's choice, not a property of the
        # input: its fanout model only answers "what was run", so it cannot gate trust.
        gating = {m: s for m, s in scores.items() if not (m == "fanout" and stage in self.elastic_stages)}
        reason = self._untrusted_reason(n_sizes, bool(rows["cold"].astype(bool).all()), gating)
        inputs = warm["input_bytes"].to_numpy(dtype=float)
        fitted = StageModel(stage, metrics, scores, feats, n_sizes, not reason, None, reason, total_output,
                            (float(inputs.min()), float(inputs.max())), total_preferred, outputs)
        fitted.cold_start_s = self._cold_start(rows, fitted)
        return fitted

    def _untrusted_reason(self, n_sizes: int, all_cold: bool, scores: dict[str, HoldoutScore]) -> str:
        """Empty if the stage is trusted, else the first reason it is not, in words."""
        if n_sizes < self.min_sizes:
            return f"profiled on {n_sizes} size(s), needs {self.min_sizes}"
        if all_cold:
            return "only cold runs measured"
        for metric, score in scores.items():
            if metric == "time":
                continue  # reported as a warning, see max_time_mape
            if not math.isfinite(score.mape):
                return f"{metric} has no held-out MAPE (no size above half the largest)"
            if score.mape > self.max_mape:
                return f"{metric} MAPE {score.mape:.0%} > {self.max_mape:.0%}"
        return ""

    def _time_warning(self, stage: str) -> str | None:
        score = self.stages_[stage].scores["time"]
        if math.isfinite(score.mape) and score.mape > self.max_time_mape:
            return (f"stage {stage}: time MAPE {score.mape:.0%} > {self.max_time_mape:.0%} on the profile: its "
                    "predicted latency is uncertain (the choice of passing method is not affected)")
        return None

    def _fit_total_output(self, warm: pd.DataFrame, fcols: list[str], feats: list[str],
                          per_instance: HoldoutScore) -> tuple[MetricModel | None, HoldoutScore, bool]:
        """A model of the stage's total output per run, if it predicts held-out totals
        better than the per-instance model does per instance (returns it and its score)."""
        runs = warm.groupby("run_id", sort=False).agg(
            total_in=("input_bytes", "sum"), total_out=("output_bytes", "sum"),
            instances=("instance", "count"), app_input_bytes=("app_input_bytes", "first"),
            _group=("_group", "first"), **{c: (c, "first") for c in fcols})
        if runs["instances"].max() <= 1 or runs["_group"].nunique() < self.min_sizes:
            return None, per_instance, False  # one instance per run: the two models are the same
        X = runs[["total_in", "app_input_bytes", *fcols]].to_numpy(dtype=float)
        y = runs["total_out"].to_numpy(dtype=float)
        g = runs["_group"].to_numpy(dtype=float)
        model = MetricModel(quantile=self.quantile, feature_names=["app_input_bytes", *feats], free_features=(1,))
        score = holdout_score(model, X, y, g)
        if not math.isfinite(score.mape):
            return None, per_instance, False
        model.fit(X, y, groups=g)
        # Chosen when it predicts held-out totals better; kept in any case as the size-only
        # answer for a per-instance model that needs the app's features when none are given.
        preferred = not math.isfinite(per_instance.mape) or score.mape < per_instance.mape
        return model, (score if preferred else per_instance), preferred

    @staticmethod
    def _cold_start(rows: pd.DataFrame, model: StageModel) -> float | None:
        """Median extra seconds of a cold instance over the warm prediction for its input."""
        cold = rows[rows["cold"].astype(bool)]
        if cold.empty or cold.shape[0] == rows.shape[0]:
            return None
        warm_pred = model.metrics["time"].predict(model.design(cold, "time"))
        return float(np.median(cold["wall_s"].to_numpy(dtype=float) - warm_pred))

    def _summary(self, rows: pd.DataFrame) -> dict[str, Any]:
        return {
            "rows": int(rows.shape[0]),
            "runs": int(rows["run_id"].nunique()),
            "run_ids": sorted(str(r) for r in rows["run_id"].unique()),
            "sizes": sorted(float(s) for s in rows["_group"].unique()),
            "stages": list(self.stage_order_),
            "sources": sorted(str(s) for s in rows["source"].unique()),
            "features": list(self.feature_names_),
            "first_timestamp": float(rows["timestamp"].min()),
            "last_timestamp": float(rows["timestamp"].max()),
            "fitted_at": time.time(),
        }

    # ------------------------------------------------------------------ predict
    def _check_fitted(self) -> None:
        if not hasattr(self, "stages_"):
            raise NotFittedError(f"models of app {self.app_name!r} are not fitted; {fix_hint(self.app_name)}")

    def predict(self, app: App, input_bytes: float, features: Mapping[str, float] | None = None, *,
                observed: Mapping[str, StagePrediction] | None = None,
                observed_instances: Mapping[str, int] | None = None) -> AppPrediction:
        """Predict every stage of ``app`` for an input of ``input_bytes`` (and ``features``).

        ``observed``: stages that already ran in this job, with what they measured; they are
        taken as they are and what flows out of them is predicted from them.
        ``observed_instances``: instance counts already known (a consumer routed from
        finished producers), used instead of the fanout model. Mid-job re-planning uses both.

        Instance input bytes flow along the DAG: a source instance reads the app input; a
        consumer instance reads, summed over its in-edges, the producer's total output
        divided by the consumer's instances (scatter), the producer's total output
        (broadcast, gather) or one producer instance's output (one-to-one). Scatter
        fanouts come from the fanout model; every other instance count is fixed by the DAG.
        """
        self._check_fitted()
        if app.name != self.app_name:
            raise UserInputError(f"these models are for app {self.app_name!r}, not {app.name!r}")
        if not input_bytes > 0:
            raise UserInputError(f"input size must be positive, got {input_bytes!r}")
        fvec = self._feature_vector(features)
        x_app = float(input_bytes)
        out: dict[str, StagePrediction] = {}
        warnings: list[str] = []
        observed = observed or {}
        counts = self._instances(app, x_app, fvec, observed, observed_instances or {})
        for name, in_edges in _structure(app):
            if name in observed:
                out[name] = observed[name]
                continue
            sm = self.stages_[name]
            n = counts[name]
            written = (sm.outputs.predict(sum(counts.get(c, 0) for c in sm.outputs.consumers))
                       if sm.outputs is not None else 1.0)
            if not in_edges:
                x = x_app
            else:
                x = 0.0
                for e in in_edges:
                    src = out[e.src]
                    if e.pattern is Pattern.SCATTER:
                        x += src.total_output_bytes / n
                    elif e.pattern is Pattern.ONE_TO_ONE:
                        x += src.output_bytes.mean
                    else:  # broadcast, gather: every consumer instance gets all of it
                        x += src.total_output_bytes
            m = sm.metrics
            extra = sm.extra("memory", x_app, written, fvec)
            total_model = sm.total_output if sm.uses_total_output(fvec is not None) else None
            if total_model is not None:  # total output, shared out over the instances
                total = total_model.predict_estimate(x * n, extra)
                output_bytes = Estimate(total.mean / n, total.hi / n)
            else:
                output_bytes = m["output_bytes"].predict_estimate(x, extra)
            lo, hi = sm.input_range
            if in_edges and hi > 0 and not lo / EXTRAPOLATION_FACTOR <= x <= hi * EXTRAPOLATION_FACTOR:
                warnings.append(f"stage {name}: predicted instance input {x:,.0f} B is far outside the "
                                f"profiled {lo:,.0f}-{hi:,.0f} B")
            if (time_warning := self._time_warning(name)) is not None:
                warnings.append(time_warning)
            out[name] = StagePrediction(
                stage=name, instances=n, input_bytes=x,
                time_s=m["time"].predict_estimate(x, sm.extra("time", x_app, written, fvec)),
                memory_mb=m["memory"].predict_estimate(x, extra),
                output_bytes=output_bytes,
                trusted=sm.trusted,
                untrusted_reason=sm.untrusted_reason,
            )
        sizes = self.training_["sizes"]
        if sizes and not min(sizes) / EXTRAPOLATION_FACTOR <= input_bytes <= max(sizes) * EXTRAPOLATION_FACTOR:
            warnings.insert(0, f"input of {input_bytes:,.0f} B is far outside the profiled sizes "
                               f"{min(sizes):,.0f}-{max(sizes):,.0f} B: predictions extrapolate")
        return AppPrediction(app.name, int(input_bytes), out, source="models", features=dict(features or {}),
                             warnings=warnings, worker_memory_mb=self.worker_memory_mb_)

    def _instances(self, app: App, x_app: float, fvec: tuple[float, ...] | None,
                   observed: Mapping[str, StagePrediction], observed_instances: Mapping[str, int]) -> dict[str, int]:
        """Every stage's instance count: observed, fixed by the DAG, or from the fanout model.
        Counts depend only on the app input, so they are known before any bytes are routed:
        a producer's outputs per instance depend on its consumers' counts."""
        counts: dict[str, int] = {}
        for name, in_edges in _structure(app):
            if name in observed:
                counts[name] = observed[name].instances
                continue
            sm = self.stages_.get(name)
            if sm is None:
                raise NotFittedError(f"stage {name!r} of app {app.name!r} has no measurements; {fix_hint(app.name)}")
            driving = next((e for e in in_edges if e.pattern in (Pattern.SCATTER, Pattern.ONE_TO_ONE)), None)
            if name in observed_instances:
                counts[name] = max(1, int(observed_instances[name]))
            elif driving is None:
                counts[name] = app.stages[name].instances
            elif driving.pattern is Pattern.ONE_TO_ONE:
                counts[name] = counts[driving.src]
            else:
                counts[name] = int(sm.metrics["fanout"].predict_estimate(x_app, fvec).mean)
        return counts

    def _feature_vector(self, features: Mapping[str, float] | None) -> tuple[float, ...] | None:
        if not features or not self.feature_names_:
            return None
        try:
            return tuple(float(features[n]) for n in self.feature_names_)
        except KeyError:
            return None  # incomplete features: the size-only forms answer

    def cold_start_s(self, stage: str) -> float | None:
        """Extra seconds of a cold instance of ``stage`` (None unless cold runs were profiled)."""
        self._check_fitted()
        return self.stages_[stage].cold_start_s

    # ------------------------------------------------------------------ report
    def report(self) -> list[dict[str, Any]]:
        """Rows ``{stage, metric, model, n_samples, mape, mape_instances, trusted}``;
        ``mape`` is a fraction, ``None`` when there were too few sizes to hold any out."""
        self._check_fitted()
        rows = []
        for stage in self.stage_order_:
            sm = self.stages_[stage]
            for metric in METRICS:
                model, score = sm.metrics[metric], sm.scores[metric]
                name = model.model_name_
                if metric == "output_bytes" and sm.total_output is not None and sm.total_output_preferred:
                    model, name = sm.total_output, f"total:{sm.total_output.model_name_}"
                rows.append({
                    "stage": stage, "metric": metric, "model": name,
                    "n_samples": model.n_samples_, "mape": _finite(score.mape),
                    "mape_instances": _finite(score.mape_instances), "trusted": sm.trusted,
                    "untrusted_reason": sm.untrusted_reason,
                })
        return rows

    # ------------------------------------------------------------------ persistence
    def save(self, root: Path | str) -> Path:
        return save_model(self, Path(root))

    @classmethod
    def load(cls, app_name: str, root: Path | str) -> AppModel:
        return load_model(app_name, Path(root), cls)


def with_memory(rows: pd.DataFrame, worker_memory_mb: float) -> pd.DataFrame:
    """``rows`` with the memory target ``_memory``: own memory plus one worker's baseline."""
    return rows.assign(_memory=rows["own_memory_mb"].to_numpy(dtype=float) + worker_memory_mb)


def _usable(values: np.ndarray) -> bool:
    return bool(np.isfinite(values).all()) and float(np.ptp(values)) > 1e-9 * max(float(np.abs(values).max()), 1.0)


def _finite(value: float) -> float | None:
    return round(float(value), 6) if math.isfinite(value) else None


_STRUCTURE_CACHE: dict[int, tuple[App, list[tuple[str, list[Any]]]]] = {}


def _structure(app: App) -> list[tuple[str, list[Any]]]:
    """Topological order and in-edges of ``app``, cached: networkx sorting on every
    prediction would cost more than all the regressions together."""
    hit = _STRUCTURE_CACHE.get(id(app))
    if hit is not None and hit[0] is app:
        return hit[1]
    structure = [(name, app.in_edges(name)) for name in app.topological_order()]
    _STRUCTURE_CACHE[id(app)] = (app, structure)
    return structure
