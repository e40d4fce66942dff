"""Checking one batch: validated with the batch suite, scored with the champion, compared with the champion's
reference sample (holdout rows: its predictions there are out of sample) by Evidently, checked for an upstream
break, its quality measured on the labelled rows the champion never learnt from; and what a person reads about it.
A batch failing validation or looking broken upstream goes to quarantine, never to the retraining windows.

The summary crosses the monitoring flow as a dict (`BatchSummary.to_dict()`, also the batch's summary.json): the
retraining signals, the history row and the markdown are read from that dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from optiflow.config import Config
from optiflow.data.sampling import sample_rows
from optiflow.data.schema import resolve_schema
from optiflow.data.validation import ValidationReport, report_html, validate_frame
from optiflow.errors import ValidationFailed
from optiflow.io import atomic_dir, write_json, write_text
from optiflow.monitoring.batches import batch_id, history_row, keep_batch, load_champion, read_batch, record_history
from optiflow.monitoring.diagnosis import diagnose
from optiflow.monitoring.drift import (
    PREDICTION,
    DriftResult,
    batch_quality,
    check_drift,
    label_array,
    save_snapshot,
)
from optiflow.monitoring.labels import write_scores
from optiflow.monitoring.performance import assess_performance
from optiflow.monitoring.quarantine import quarantine_batch, upstream_breaks
from optiflow.monitoring.retraining import INVALID, Signals


@dataclass(frozen=True)
class BatchSummary:
    batch_id: str
    source: str
    labelled_rows: int  # rows with a label (all or none: a batch carries the target column or not)
    champion_version: str
    report: str  # the Evidently HTML report
    drift: DriftResult
    quarantine: tuple[str, ...] = ()  # why it looks broken upstream; non-empty: quarantined, not kept
    quality_rows: int | None = None  # labelled rows the quality was measured on (those the champion never saw)
    performance: dict[str, Any] | None = None  # PerformanceCheck.to_dict(): estimated, reference, realised
    diagnosis: dict[str, Any] | None = None  # Diagnosis.to_dict(): the kind of shift and its evidence

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "source": self.source,
            "labelled_rows": self.labelled_rows,
            "champion_version": self.champion_version,
            "report": self.report,
            **self.drift.to_dict(),
            "quarantine": list(self.quarantine),
            "quality_rows": self.quality_rows,
            "performance": self.performance,
            "diagnosis": self.diagnosis,
        }


def check_batch(config: Config, path: Path) -> BatchSummary:
    """Validate the batch, score it with the champion, write its drift report folder and keep it when labelled,
    unless it looks broken upstream (then it is quarantined).

    A batch failing validation gets its validation report, a place in quarantine and an `invalid` history row, then
    raises ValidationFailed: it is never scored, kept or used for a retraining until a person releases it.
    """
    params, data = config.params, config.params.data
    identifier = batch_id(path)
    folder = config.path("monitoring") / identifier
    frame = read_batch(path, data)
    schema = resolve_schema(frame, data)
    validation = validate_frame(frame, schema, data, params.validation, str(path), batch=True)
    if not validation.success:
        with atomic_dir(folder) as staging:
            _write_validation(staging, validation)
        invalid = {"batch_id": identifier, "source": str(path), "rows": len(frame), "labelled_rows": 0}
        message = validation.failure_message()
        kept = quarantine_batch(config, identifier, str(path), frame, message.splitlines()[1:])
        record_history(config, history_row(invalid, INVALID, message.splitlines()[0], None, datetime.now(UTC)))
        raise ValidationFailed(
            f"{message}\nFull report: {folder.relative_to(config.root)}/validation.html. "
            f"The batch was not used: no retraining, the champion is unchanged; it waits in quarantine ({kept.name}, "
            "`optiflow quarantine list`)."
        )
    champion = load_champion(config)
    reference = champion.reference
    checked = sample_rows(frame, params.monitor.sample_rows, params.seed).reset_index(drop=True)
    features = list(schema.features)
    current_scores = champion.scores(checked[features])
    unseen = champion.unseen(checked)  # the champion's quality on rows it learnt from would flatter it
    labels = label_array(unseen, data)
    quality, unseen_scores = None, None
    if labels is not None and len(labels):
        unseen_scores = champion.scores(unseen[features])
        quality = batch_quality(labels, unseen_scores, champion.threshold, champion.test)
    breaks = tuple(upstream_breaks(reference, checked, schema, params.monitor))
    reference_scores = champion.scores(reference[features])
    performance = assess_performance(
        reference_scores,
        label_array(reference, data),
        current_scores,
        champion.threshold,
        batch_labels=labels,
        labelled_scores=unseen_scores,
        draws=params.monitor.estimate_draws,
        seed=params.seed,
    ).to_dict()
    result, snapshot = check_drift(
        reference,
        checked,
        schema,
        params.monitor,
        reference_scores=reference_scores,
        current_scores=current_scores,
        quality=quality,
        rows=len(frame),
    )
    labelled_rows = len(frame) if data.target in frame.columns else 0
    summary = BatchSummary(
        identifier,
        str(path),
        labelled_rows,
        champion.version,
        str(folder / "drift.html"),
        result,
        breaks,
        None if labels is None else len(labels),
        performance,
        diagnose(
            performance,
            drifted_columns=result.drifted_columns,
            prediction_drifted=result.prediction_drifted,
            upstream_breaks=breaks,
            z=params.monitor.noise_z,
        ).to_dict(),
    )
    with atomic_dir(folder) as staging:
        _write_validation(staging, validation)
        write_scores(staging, checked, current_scores, champion.seen)
        save_snapshot(snapshot, staging / "drift.html", staging / "drift.json")
        write_json(staging / "summary.json", summary.to_dict())
    if breaks:
        quarantine_batch(config, identifier, str(path), frame, list(breaks))
    elif labelled_rows:
        keep_batch(config, identifier, frame)
    return summary


def signals(summary: Mapping[str, Any]) -> Signals:
    """What the retraining decision reads from a batch summary."""
    return Signals(
        drift_share=summary["drift_share"],
        drifted_columns=tuple(summary["drifted_columns"]),
        prediction_drift=summary["prediction_drift"],
        prediction_drifted=summary["prediction_drifted"],
        quality_drop=summary["quality_drop"],
        labelled_rows=summary["labelled_rows"],
        quarantine=tuple(summary.get("quarantine") or ()),
        prediction_test=summary.get("column_tests", {}).get(PREDICTION),
    )


def batch_markdown(summary: Mapping[str, Any], decision: str, reason: str) -> str:
    """The verdict on one batch with its figures and a link to the Evidently report."""
    quality = summary.get("quality") or {}
    rows = [
        ("rows (checked)", f"{summary['rows']} ({summary['rows_checked']})"),
        ("share of drifted columns", f"{summary['drift_share']:.3f}"),
        ("drifted columns", ", ".join(summary["drifted_columns"]) or "none"),
        ("prediction drift", _fmt(summary["prediction_drift"])),
        ("quarantine", "; ".join(summary.get("quarantine") or []) or "no"),
        ("ROC AUC on the batch", _fmt(quality.get("roc_auc"))),
        ("rows it was measured on (never learnt from)", str(summary.get("quality_rows") or "n/a")),
        ("champion's test ROC AUC", _fmt(quality.get("champion_roc_auc"))),
        ("F1 on the batch", _fmt(quality.get("f1"))),
        *_performance_rows(summary),
        ("champion", f"v{summary['champion_version']}"),
    ]
    table = "| figure | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    link = Path(summary["report"]).resolve().as_uri()
    return (
        f"# Batch `{summary['batch_id']}`: **{decision}**\n\n{reason}\n\n{table}\n\n"
        f"Evidently report: [{Path(summary['report']).name}]({link})"
    )


def _performance_rows(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Estimated beside realised (with the band), calibration, the diagnosed shift and what the decision weighed."""
    performance, diagnosis = summary.get("performance"), summary.get("diagnosis") or {}
    if not performance:
        return []
    estimated, realised = performance["estimated"], performance.get("realised") or {}
    level = f"{100 * estimated['level']:.0f}%"
    rows = []
    for metric in ("roc_auc", "accuracy", "f1", "positive_rate"):
        band = estimated[metric]
        rows.append(
            (
                f"{metric}: estimated [{level} band] / realised / reference estimate",
                f"{_fmt(band['estimate'])} [{_fmt(band['low'])}, {_fmt(band['high'])}] / {_fmt(realised.get(metric))}"
                f" / {_fmt(performance['reference'][metric]['estimate'])}",
            )
        )
    checks = {"reference": performance["reference_calibration"], "batch": performance.get("batch_calibration")}
    calibration = "; ".join(
        f"{where}: {'holds' if check['holds'] else 'BROKEN ' + str(check['worst_bin'])} (ECE {check['ece']:.3f})"
        for where, check in checks.items()
        if check
    )
    rows.append(("calibration", calibration))
    rows.append(("shift", f"**{diagnosis.get('shift')}**: " + "; ".join(diagnosis.get("evidence") or [])))
    figures = summary.get("decision_figures") or {}
    if figures:
        rows.append(
            (
                "decision figures",
                f"{figures['source']} drop {figures['drop']:+.3f} (se {figures['standard_error']:.3f}), expected loss "
                f"{figures['expected_loss']:.1f} vs retrain cost {figures['retrain_cost']:g}"
                + (f"; {figures['concept_shift']}" if figures.get("concept_shift") else ""),
            )
        )
    return rows


def _write_validation(folder: Path, validation: ValidationReport) -> None:
    write_json(folder / "validation.json", validation.to_dict())
    write_text(folder / "validation.html", report_html(validation))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
