"""When a monitored batch starts a retraining: a pure function of the batch's figures, the history and params.

Retrain when the share of drifted columns, the champion's score drift or its quality drop crosses its threshold;
but not within the cool-down of a previous retraining (unless the drift is severe), and not before enough new
labelled rows have arrived. A quarantined batch (optiflow.monitoring.quarantine) retrains nothing: its drift is a
broken feed, not a changed world. Every verdict carries the reason a person reads in the history table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import pandas as pd

from optiflow.config import MonitorParams

Action = Literal["ignored", "alert", "debounced", "retrain", "quarantined"]

# History decisions: the verdict, or for a retraining its outcome. The last three mean a retraining ran.
IGNORED, ALERT, DEBOUNCED, INVALID = "ignored", "alert", "debounced", "invalid"
RETRAINED, PROMOTED, REJECTED = "retrained", "promoted", "rejected"
RETRAINING_DECISIONS = (RETRAINED, PROMOTED, REJECTED)
# A batch in quarantine (invalid, or broken upstream), and what a person decided about it later.
QUARANTINED, RELEASED, DROPPED = "quarantined", "released", "dropped"
NEVER_TRAINED_ON = (INVALID, QUARANTINED, DROPPED)  # batches no retraining window may use
CONCEPT_CONFIRMATIONS = 2  # labelled batches in a row diagnosed `concept` before older labels count as outdated


@dataclass(frozen=True)
class Signals:
    """What the drift check saw on one batch."""

    drift_share: float
    drifted_columns: tuple[str, ...] = ()
    prediction_drift: float | None = None
    prediction_drifted: bool = False
    quality_drop: float | None = None  # champion test ROC AUC minus the batch's; None without labels
    labelled_rows: int = 0
    quarantine: tuple[str, ...] = ()  # why the batch looks broken upstream; non-empty: quarantined
    prediction_test: str | None = None  # the test the scores were compared with, e.g. "ks p < 5e-05"


@dataclass(frozen=True)
class RetrainingDecision:
    action: Action
    reason: str
    triggers: tuple[str, ...] = ()
    severe: bool = False
    figures: dict[str, Any] = field(default_factory=dict)  # what the decision weighed (optiflow.monitoring.decision)


def decide(signals: Signals, history: pd.DataFrame, params: MonitorParams, now: datetime) -> RetrainingDecision:
    """The verdict for one batch; ``history`` holds the earlier batches (columns at, decision, labelled_rows)."""
    if signals.quarantine:
        return RetrainingDecision(
            "quarantined",
            "quarantined, looks broken upstream: "
            + "; ".join(signals.quarantine)
            + " (`optiflow quarantine release` once checked)",
        )
    triggers = drift_triggers(signals, params) + concept_triggers(history)
    if not triggers:
        return RetrainingDecision("ignored", "no drift: " + _figures(signals, params))
    severe = signals.drift_share >= params.severe_drift_share
    new_rows = signals.labelled_rows + labelled_since_last_retraining(history)
    if new_rows < params.min_new_rows:
        return RetrainingDecision(
            "debounced",
            f"{'; '.join(triggers)}; but only {new_rows} new labelled rows since the last retraining "
            f"(monitor.min_new_rows {params.min_new_rows})",
            tuple(triggers),
            severe,
        )
    cooling = cooldown(history, params, now)
    if cooling and not severe:
        return RetrainingDecision(
            "debounced",
            f"{'; '.join(triggers)}; but {cooling} (cool-down; a drift share >= {params.severe_drift_share:g} "
            "would override it)",
            tuple(triggers),
            severe,
        )
    override = f" (severe drift overrides the cool-down: {cooling})" if cooling else ""
    return RetrainingDecision("retrain", "; ".join(triggers) + override, tuple(triggers), severe)


def window_batches(history: pd.DataFrame, current: str | None, policy: str, last_k: int) -> tuple[bool, list[str]]:
    """The retraining data window: whether the original training data is included, and which labelled batches.

    all: training + every labelled batch; last_k: only the last K labelled batches; training_plus_labelled:
    training + the labelled batches since the last retraining. After a confirmed concept shift (``concept_change``)
    every policy takes only the labelled batches from the change on, without the training data. ``current`` is the
    batch being decided (or None).
    """
    usable = (
        history[(history["labelled_rows"] > 0) & ~history["decision"].isin(NEVER_TRAINED_ON)]
        if len(history)
        else history
    )
    earlier = list(usable["batch_id"]) if len(usable) else []
    change = concept_change(history)
    if change is not None:  # labels from before a confirmed concept shift answer the old question: none are used
        chosen, include_training = list(usable.loc[usable.index >= change, "batch_id"]), False
    elif policy == "all":
        chosen, include_training = earlier, True
    elif policy == "last_k":
        chosen, include_training = earlier, False
    elif policy == "training_plus_labelled":
        last = _last_retraining_index(history)
        since = usable if last is None else usable.loc[usable.index > last]
        chosen, include_training = list(since["batch_id"]) if len(since) else [], True
    else:
        raise ValueError(f"unknown monitor.window {policy!r}")
    chosen = chosen + ([current] if current is not None else [])
    if policy == "last_k":
        chosen = chosen[-last_k:]
    return include_training, chosen


def _diagnosed(history: pd.DataFrame) -> pd.Series:
    """The shift diagnosed on each labelled batch a window may use, in history order."""
    if not len(history) or "shift" not in history.columns:
        return pd.Series(dtype=object)
    usable = (history["labelled_rows"] > 0) & ~history["decision"].isin(NEVER_TRAINED_ON) & history["shift"].notna()
    return history.loc[usable, "shift"]


def _concept_runs(diagnosed: pd.Series) -> list[list[int]]:
    """Runs of labelled batches in a row (``_diagnosed`` order) diagnosed ``concept``, as history indices; a batch
    whose labels are not in yet neither breaks nor extends a run."""
    runs: list[list[int]] = [[]]
    for index, shift in diagnosed.items():
        if shift == "concept":
            runs[-1].append(int(index))
        elif runs[-1]:
            runs.append([])
    return [run for run in runs if run]


def concept_change(history: pd.DataFrame) -> int | None:
    """The history index where the newest confirmed concept shift began: the first batch of the latest run of at
    least two labelled batches in a row diagnosed ``concept``; None without one. One batch alone can be chance (the
    diagnosis allows noise_z standard errors); two in a row are taken as P(y|x) having changed."""
    confirmed = [run for run in _concept_runs(_diagnosed(history)) if len(run) >= CONCEPT_CONFIRMATIONS]
    return confirmed[-1][0] if confirmed else None


def concept_triggers(history: pd.DataFrame) -> list[str]:
    """A retraining is due while a confirmed concept shift goes on: the newest diagnosed labelled batches are still
    `concept`, so the model that scored them learnt the old labels. Its drop against its own reference no longer
    tells: a model retrained at the change has a reference that already holds the new concept."""
    diagnosed = _diagnosed(history)
    runs = _concept_runs(diagnosed)
    if not runs or len(runs[-1]) < CONCEPT_CONFIRMATIONS or runs[-1][-1] != diagnosed.index[-1]:
        return []
    first, latest = (history.loc[index, "batch_id"] for index in (runs[-1][0], runs[-1][-1]))
    return [f"concept shift since batch {first} (still diagnosed on {latest}): the scoring model learnt older labels"]


def drift_triggers(signals: Signals, params: MonitorParams) -> list[str]:
    triggers = []
    if signals.drift_share >= params.drift_share:
        columns = ", ".join(signals.drifted_columns)
        triggers.append(f"drift share {signals.drift_share:.3f} >= {params.drift_share:g} ({columns})")
    if params.retrain_on_prediction_drift and signals.prediction_drifted:
        test = signals.prediction_test or f"{params.prediction_method} >= {params.prediction_threshold:g}"
        triggers.append(f"prediction drift {signals.prediction_drift:.3g} ({test})")
    if signals.quality_drop is not None and signals.quality_drop >= params.max_quality_drop:
        triggers.append(f"ROC AUC dropped {signals.quality_drop:.3f} >= {params.max_quality_drop:g}")
    return triggers


def _figures(signals: Signals, params: MonitorParams) -> str:
    parts = [f"drift share {signals.drift_share:.3f} < {params.drift_share:g}"]
    if signals.prediction_drift is not None:
        test = f" ({signals.prediction_test})" if signals.prediction_test else ""
        parts.append(f"prediction drift {signals.prediction_drift:.3g}{test}")
    if signals.quality_drop is not None:
        parts.append(f"ROC AUC drop {signals.quality_drop:.3f} < {params.max_quality_drop:g}")
    return ", ".join(parts)


def _last_retraining_index(history: pd.DataFrame) -> int | None:
    if not len(history):
        return None
    retrained = history.index[history["decision"].isin(RETRAINING_DECISIONS)]
    return int(retrained[-1]) if len(retrained) else None


def labelled_since_last_retraining(history: pd.DataFrame) -> int:
    if not len(history):
        return 0
    last = _last_retraining_index(history)
    since = history if last is None else history.loc[history.index > last]
    return int(since.loc[~since["decision"].isin(NEVER_TRAINED_ON), "labelled_rows"].sum())


def cooldown(history: pd.DataFrame, params: MonitorParams, now: datetime) -> str | None:
    """Why a retraining now would be too soon, or None."""
    last = _last_retraining_index(history)
    if last is None:
        return None
    batches_since = int((history.index > last).sum()) + 1  # counting this batch
    if params.cooldown_batches and batches_since <= params.cooldown_batches:
        return f"a retraining ran {batches_since} batch(es) ago (monitor.cooldown_batches {params.cooldown_batches})"
    at = datetime.fromisoformat(str(history.loc[last, "at"]))
    if params.cooldown_hours and now - at < timedelta(hours=params.cooldown_hours):
        hours = (now - at).total_seconds() / 3600
        return f"a retraining ran {hours:.1f} h ago (monitor.cooldown_hours {params.cooldown_hours:g})"
    return None
