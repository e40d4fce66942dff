"""A backtest of retraining policies: a long labelled stream replayed through the monitoring and training core.

The stream is built from the source table's rows no first model learns from (test, holdout and pool roles), one
batch a day, with labels arriving ``label_delay`` batches late. Each scenario changes the stream from batch
``shift_at`` on (control changes nothing); batches before it are the same draws in every scenario. Each stream row's
key puts it, once and for all, in the scoring half (every model is judged on these rows, none ever learns from them)
or the learning half (what retraining sets may use), so a realised ROC AUC never counts a row a model learnt from.

Every policy meets the same batches with the same code the monitoring flow runs: the drift check (Evidently, against
the first model's reference chunk, once per batch), the upstream-break check, the performance check and estimate,
the shift diagnosis, the drift rule or the cost-aware decision, the retraining window and set, and training
(build_pipeline, fit, calibration and threshold chosen on the valid rows). Training is cheap by design: one family
with its configured hyperparameters, no tuning; a model is trained once per distinct training set and reused by
every policy and scenario that asks for the same rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from optiflow.assess.calibration import choose_calibration, decision_threshold
from optiflow.config import BACKTEST_SCENARIOS, BacktestParams, Config, Params
from optiflow.data.ingest import load_dataset
from optiflow.data.keys import (
    HOLDOUT,
    KEY_COLUMN,
    POOL,
    ROLE_COLUMN,
    TEST,
    TRAIN,
    VALID,
    key_fraction,
    source_roles,
    with_keys,
)
from optiflow.data.sampling import sample_rows
from optiflow.data.schema import Schema, resolve_schema
from optiflow.data.simulate import draw, draw_mix
from optiflow.data.split import labels
from optiflow.modeling.families import build_pipeline
from optiflow.monitoring.decision import decide_on_impact, expected_loss
from optiflow.monitoring.diagnosis import diagnose
from optiflow.monitoring.drift import check_drift
from optiflow.monitoring.performance import Impact, assess_performance, performance_impact
from optiflow.monitoring.quarantine import upstream_breaks
from optiflow.monitoring.retraining import (
    IGNORED,
    QUARANTINED,
    RETRAINED,
    Signals,
    decide,
    window_batches,
)
from optiflow.monitoring.window import retraining_set
from optiflow.timing import timed

START = datetime(2026, 1, 1, tzinfo=UTC)
_HALF_SALT = "optiflow-bktst-1"  # 16 bytes, pandas hash key


@dataclass
class _Model:
    id: str
    model: Any
    threshold: float
    reference: pd.DataFrame  # labelled rows it never learnt from: its baseline
    seconds: float


@dataclass
class _Run:
    """One policy on one scenario: its champion, its monitoring history and the timeline it produced."""

    policy: str
    champion: _Model
    history: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["batch_id", "at", "decision", "labelled_rows", "shift"])
    )
    timeline: list[dict[str, Any]] = field(default_factory=list)
    retrain_seconds: float = 0.0


class Backtest:
    """The stream, the models trained so far (by training set) and the per-(model, batch) checks, shared by every
    policy and scenario."""

    def __init__(self, params: Params, source: pd.DataFrame, settings: BacktestParams) -> None:
        self.params, self.settings, self.data = params, settings, params.data
        self.monitor = params.monitor.model_copy(update={"retrain_on_prediction_drift": False})
        roles = source_roles(source[KEY_COLUMN], params.split)
        self.source = source
        self.schema: Schema = resolve_schema(source, params.data)
        self.stream = source[np.isin(roles, (TEST, HOLDOUT, POOL))].reset_index(drop=True)
        # the stream resamples the held-out rows, so its keys are the source's evaluation keys, which a retraining set
        # keeps out of training; real batches hold new keys: retraining sets here start from the training rows only
        self.learnable = source[np.isin(roles, (TRAIN, VALID))].reset_index(drop=True)
        reference = sample_rows(source[roles == HOLDOUT], params.split.reference_rows, params.seed)
        first = source.assign(**{ROLE_COLUMN: roles})
        self.first = self._train(first[np.isin(roles, (TRAIN, VALID))], reference.reset_index(drop=True))
        self.reference = self.first.reference
        self.models: dict[str, _Model] = {self.first.id: self.first}
        self.drift: dict[str, Any] = {}
        self.checks: dict[tuple[str, str], dict[str, Any]] = {}

    # the stream ------------------------------------------------------------------------------------------------
    def batch(self, scenario: str, t: int) -> tuple[str, pd.DataFrame]:
        """Batch ``t`` of ``scenario`` (before shift_at: the control draw, identical in every scenario)."""
        settings, data = self.settings, self.data
        changed = scenario != "control" and t >= settings.shift_at
        name = f"{scenario if changed else 'control'}-{t:03d}"
        rng = np.random.default_rng([self.params.seed, t, BACKTEST_SCENARIOS.index(scenario) if changed else 0])
        stream, rows = self.stream, settings.batch_rows
        monthly = (stream["contract"] == "Month-to-month").to_numpy()
        step = (t - settings.shift_at) / max(settings.batches - 1 - settings.shift_at, 1)
        if not changed:
            frame = draw(stream, rows, rng)
        elif scenario == "sudden_covariate":
            frame = draw_mix(stream, monthly, 0.9, rows, rng, "month-to-month")
        elif scenario == "gradual_covariate":
            frame = draw_mix(stream, monthly, monthly.mean() + step * (0.95 - monthly.mean()), rows, rng, "m2m")
        elif scenario == "seasonal":
            segment = ((stream["internet_service"] == "Fiber optic") & (stream["tenure"] <= 12)).to_numpy()
            in_season = (t - settings.shift_at) % 12 < 4
            frame = draw_mix(stream, segment, 0.4, rows, rng, "new fiber") if in_season else draw(stream, rows, rng)
        elif scenario == "prior":
            positive = (stream[data.target] == data.positive_label).to_numpy()
            frame = draw_mix(stream, positive, 0.5, rows, rng, "churners")
        elif scenario == "concept":  # customers on a contract start leaving at random: P(y|x) changed for them
            frame = draw(stream, rows, rng)
            bound = (frame["contract"] != "Month-to-month").to_numpy() & (rng.random(len(frame)) < 0.35)
            frame.loc[bound, data.target] = data.positive_label
        elif scenario == "upstream_break":
            frame = draw(stream, rows, rng)
            frame["tenure"] = (frame["tenure"] / 12.0).round(2)
        else:
            raise ValueError(f"unknown scenario {scenario!r}; scenarios: {BACKTEST_SCENARIOS}")
        return name, frame.reset_index(drop=True)

    def halves(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        scoring = key_fraction(frame[KEY_COLUMN], _HALF_SALT) < 0.5
        return frame[scoring].reset_index(drop=True), frame[~scoring].reset_index(drop=True)

    # the checks --------------------------------------------------------------------------------------------------
    def drift_check(self, name: str, frame: pd.DataFrame) -> dict[str, Any]:
        if name not in self.drift:
            result, _ = check_drift(self.reference, frame, self.schema, self.monitor)
            breaks = upstream_breaks(self.reference, frame, self.schema, self.monitor)
            self.drift[name] = {"result": result, "breaks": tuple(breaks)}
        return self.drift[name]

    def check(self, model: _Model, name: str, frame: pd.DataFrame, labelled: bool) -> dict[str, Any]:
        """The performance check of ``model`` on the scoring half of a batch (realised figures when ``labelled``)."""
        key = (model.id, f"{name}:{labelled}")
        if key not in self.checks:
            scoring, _ = self.halves(frame)
            features = list(self.schema.features)
            self.checks[key] = assess_performance(
                model.model.predict_proba(model.reference[features])[:, 1],
                labels(model.reference, self.data),
                model.model.predict_proba(scoring[features])[:, 1],
                model.threshold,
                batch_labels=labels(scoring, self.data) if labelled else None,
                draws=self.settings.draws,
                seed=self.params.seed,
            ).to_dict()
        return self.checks[key]

    def diagnosis(self, check: dict[str, Any], name: str) -> str:
        """The shift a labelled performance check of batch ``name`` shows (as monitoring records it in history)."""
        drift = self.drift[name]
        z, drifted = self.monitor.noise_z, drift["result"].drifted_columns
        return diagnose(check, drifted_columns=drifted, upstream_breaks=drift["breaks"], z=z).shift

    # training ----------------------------------------------------------------------------------------------------
    def _train(self, frame: pd.DataFrame, reference: pd.DataFrame) -> _Model:
        """Fit on the train rows, calibrate and pick the threshold on the valid rows (as the training flow does)."""
        digest = pd.util.hash_pandas_object(frame[[KEY_COLUMN, ROLE_COLUMN, self.data.target]], index=False)
        identifier = hashlib.sha256(digest.to_numpy().tobytes()).hexdigest()[:16]
        if identifier in getattr(self, "models", {}):
            return self.models[identifier]
        train, valid = frame[frame[ROLE_COLUMN] == TRAIN], frame[frame[ROLE_COLUMN] == VALID]
        features = list(self.schema.features)
        hyperparameters = dict(self.params.train.families.get(self.settings.family) or {})
        pipeline = build_pipeline(self.settings.family, hyperparameters, self.schema, self.params.seed)
        y_valid = labels(valid, self.data)

        def fit() -> tuple[Any, float]:
            pipeline.fit(train[features], labels(train, self.data))
            calibration = choose_calibration(
                pipeline, valid[features], y_valid, self.params.evaluate.calibration_folds, self.params.seed
            )
            scores = calibration.model.predict_proba(valid[features])[:, 1]
            return calibration.model, decision_threshold(y_valid, scores, self.params.evaluate)

        (model, threshold), seconds = timed(fit)
        trained = _Model(identifier, model, threshold, reference, seconds)
        if hasattr(self, "models"):
            self.models[identifier] = trained
        return trained

    def _window(self, run: _Run, upto: int) -> list[str]:
        labelled = run.history[run.history.index <= upto]
        return window_batches(labelled, None, self.monitor.window, self.monitor.last_k)[1]

    def retrain(self, run: _Run, name: str, upto: int, frames: dict[str, pd.DataFrame]) -> _Model:
        """The retraining window (monitor.window) over the labelled batches up to ``upto``, the retraining set (the
        newest batch only evaluates and becomes the new reference), and the model trained on it."""
        labelled = run.history[run.history.index <= upto]
        include_training, chosen = window_batches(labelled, None, self.monitor.window, self.monitor.last_k)
        batches = [(batch, self.halves(frames[batch])[1]) for batch in chosen]
        built = retraining_set(self.learnable, batches, self.data, self.params.split, include_training)
        reference = built.frame[built.frame[KEY_COLUMN].isin(batches[-1][1][KEY_COLUMN])]
        return self._train(built.frame, reference.reset_index(drop=True))

    # one scenario ------------------------------------------------------------------------------------------------
    def run(self, scenario: str, policy: str, frames: dict[str, pd.DataFrame], names: Sequence[str]) -> _Run:
        run, settings = _Run(policy, self.first), self.settings
        delay = 0 if policy == "oracle" else settings.label_delay
        for t, name in enumerate(names):
            frame, model, now = frames[name], run.champion, START + timedelta(days=t)
            drift = self.drift_check(name, frame)
            result, breaks = drift["result"], drift["breaks"]
            signals = Signals(result.drift_share, result.drifted_columns, quarantine=breaks)
            estimated = self.check(model, name, frame, labelled=False)
            arrived = t - delay  # the batch whose labels arrive now
            realised = self.check(model, names[arrived], frames[names[arrived]], True) if arrived >= 0 else None
            new_rows = len(self.halves(frames[names[arrived]])[1]) if arrived >= 0 else 0
            if arrived >= 0 and arrived < t:  # with the shift diagnosed on the scores of the model that served it
                run.history.loc[arrived, ["labelled_rows", "shift"]] = [new_rows, run.timeline[arrived]["shift"]]
            arriving_now = new_rows if arrived == t else 0
            verdict, figures = (
                (QUARANTINED, {"quarantine": "; ".join(breaks)})
                if breaks
                else self._decide(policy, t, signals, estimated, realised, run, now, arriving_now)
            )
            run.history.loc[t] = [name, now.isoformat(), verdict, arriving_now, None]
            retrained = False
            if verdict == "retrain" and arrived >= 0 and self._window(run, arrived):
                run.champion = self.retrain(run, name, arrived, frames)
                run.retrain_seconds += run.champion.seconds
                run.history.loc[t, "decision"] = RETRAINED
                retrained = True
            # the realised figures of the model that served this batch, known once its labels arrive
            served = self.check(model, name, frame, labelled=True)
            run.timeline.append(
                {
                    "t": t,
                    "batch": name,
                    "changed": scenario != "control" and t >= settings.shift_at,
                    "policy": policy,
                    "model": model.id,
                    "realised_roc_auc": served["realised"]["roc_auc"],
                    "estimated_roc_auc": served["estimated"]["roc_auc"]["estimate"],
                    "estimated_low": served["estimated"]["roc_auc"]["low"],
                    "estimated_high": served["estimated"]["roc_auc"]["high"],
                    "shift": self.diagnosis(served, name),
                    "drift_share": result.drift_share,
                    "decision": verdict,
                    "retrained": retrained,
                    **{f"decision_{key}": value for key, value in figures.items()},
                }
            )
            if arrived == t:
                run.history.loc[t, "shift"] = run.timeline[t]["shift"]
        return run

    def _decide(
        self,
        policy: str,
        t: int,
        signals: Signals,
        estimated: dict[str, Any],
        realised: dict[str, Any] | None,
        run: _Run,
        now: datetime,
        labelled_rows: int,
    ) -> tuple[str, dict[str, Any]]:
        history, monitor = run.history, self.monitor
        signals = replace(signals, labelled_rows=labelled_rows)
        if policy == "never":
            return IGNORED, {}
        if policy == "every_k":
            due = t > 0 and t % self.settings.every_k == 0 and realised is not None
            return ("retrain" if due else IGNORED), {}
        if policy == "drift_share":
            drop = None
            if realised is not None and realised["realised"] is not None:
                drop = realised["reference_realised"]["roc_auc"] - realised["realised"]["roc_auc"]
            verdict = decide(replace(signals, quality_drop=drop), history, monitor, now)
            return verdict.action, {"drift_share": signals.drift_share, "quality_drop": drop}
        impacts: list[Impact] = []
        if policy == "estimated_performance":
            impacts.append(performance_impact(estimated, monitor.noise_z))
        if realised is not None:
            impacts.append(performance_impact(realised, monitor.noise_z))
        impact = max(impacts, key=lambda candidate: (expected_loss(candidate, monitor), candidate.drop))
        verdict = decide_on_impact(signals, impact, history, monitor, now)
        return verdict.action, verdict.figures


def run_backtest(
    config: Config,
    settings: BacktestParams,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every policy on every scenario; returns (the table per scenario x policy, the timeline of every batch)."""
    source, _ = load_dataset(config.source, config.params.data)
    backtest = Backtest(config.params, with_keys(source, config.params.data), settings)
    total, done = len(settings.scenarios) * len(settings.policies), 0
    rows, timelines = [], []
    for scenario in settings.scenarios:
        frames = dict(backtest.batch(scenario, t) for t in range(settings.batches))
        names = list(frames)
        for policy in settings.policies:
            run = backtest.run(scenario, policy, frames, names)
            timeline = pd.DataFrame(run.timeline).assign(scenario=scenario)
            timelines.append(timeline)
            rows.append(summarise(timeline, run, scenario, policy, settings))
            done += 1
            if progress is not None:
                progress(done, total)
    return pd.DataFrame(rows), pd.concat(timelines, ignore_index=True)


def summarise(
    timeline: pd.DataFrame, run: _Run, scenario: str, policy: str, settings: BacktestParams
) -> dict[str, Any]:
    """Mean and worst realised ROC AUC, retrains, training seconds, false alarms (retrains before the change, or on
    the control stream) and detection delay (batches from the change to the first retrain after it)."""
    retrains = timeline[timeline["retrained"]]
    before = retrains[~retrains["changed"]]
    after = retrains[retrains["changed"]]
    delay = int(after["t"].iloc[0] - settings.shift_at) if scenario != "control" and len(after) else None
    return {
        "scenario": scenario,
        "policy": policy,
        "mean_roc_auc": float(timeline["realised_roc_auc"].mean()),
        "worst_roc_auc": float(timeline["realised_roc_auc"].min()),
        "retrains": len(retrains),
        "training_seconds": round(run.retrain_seconds, 2),
        "false_alarms": len(before) if scenario != "control" else len(retrains),
        "detection_delay": delay,
    }


def backtest_html(table: pd.DataFrame, timeline: pd.DataFrame, settings: BacktestParams) -> str:
    """The table and one realised-ROC-AUC-over-time chart per scenario (a line per policy, retrains marked)."""
    import base64
    import io

    from matplotlib.figure import Figure

    charts = []
    for scenario, part in timeline.groupby("scenario", sort=False):
        figure = Figure(figsize=(9, 3.2))
        axes = figure.subplots()
        for policy, line in part.groupby("policy", sort=False):
            drawn = axes.plot(line["t"], line["realised_roc_auc"], label=policy, linewidth=1.2)
            marked = line[line["retrained"]]
            axes.scatter(marked["t"], marked["realised_roc_auc"], color=drawn[0].get_color(), marker="v", s=30)
        if scenario != "control":
            axes.axvline(settings.shift_at, color="grey", linestyle="--", linewidth=1)
        axes.set(
            title=f"{scenario}: realised ROC AUC per batch (triangles: retrains)", xlabel="batch", ylabel="ROC AUC"
        )
        axes.legend(fontsize="small", ncol=5, loc="lower left")
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=90)
        charts.append(
            f'<h2>{scenario}</h2><img src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Optiflow backtest</title></head><body>"
        f"<h1>Backtest of retraining policies</h1><p>{settings.batches} batches of {settings.batch_rows} rows, labels "
        f"{settings.label_delay} batches late, change from batch {settings.shift_at}; {settings.family}, no tuning.</p>"
        + table.to_html(index=False, float_format=lambda value: f"{value:.3f}", na_rep="-")
        + "".join(charts)
        + "</body></html>"
    )
