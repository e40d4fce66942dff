"""ingest: read the configured source, check its sha256, type it, validate it, key its rows (optiflow.data.keys),
and only then publish it.

Validation runs on the typed table in memory, inside ingest: data that breaks the suite is never written to
data/interim/, so a bad file can never replace the last good dataset (or its report) that later stages read.
"""

from __future__ import annotations

from pathlib import Path

from optiflow.config import Config
from optiflow.data.ingest import load_dataset
from optiflow.data.keys import KEY_COLUMN, with_keys
from optiflow.data.schema import resolve_schema
from optiflow.data.validation import ValidationReport, report_html, validate_frame
from optiflow.errors import ValidationFailed
from optiflow.io import atomic_dir, write_json, write_parquet, write_text
from tasks.common import StageResult, publish_table, stage_logger, stage_task


@stage_task("ingest")
def ingest(config: Config) -> StageResult:
    data = config.params.data
    frame, digest = load_dataset(config.source, data)
    report = validate_frame(frame, resolve_schema(frame, data), data, config.params.validation, data.source)
    failed = f"Great Expectations: {len(report.failures)} of {len(report.checks)} expectations failed"
    publish_table("validation", report.table_rows(), failed)
    if not report.success:
        failures = config.path("validation_failures")
        _write_report(failures, report)
        raise ValidationFailed(
            f"{report.failure_message()}\nFull report: {(failures / 'report.html').relative_to(config.root)}"
        )
    # The dataset first, its report last: the report's presence marks a completed, validated ingest.
    frame = with_keys(frame, data)
    write_parquet(config.path("dataset"), frame)
    _write_report(config.path("validation"), report)
    log = stage_logger()
    log.info("ingested %s: %d rows x %d columns (sha256 %s)", config.source, *frame.shape, digest[:12])
    log.info("validation passed: %d expectations on %d rows", len(report.checks), report.rows)
    return {
        "stage": "ingest",
        "rows": len(frame),
        "columns": frame.shape[1],
        "sha256": digest,
        "expectations": len(report.checks),
        "failed": 0,
        "duplicate_keys": int(frame[KEY_COLUMN].duplicated().sum()),
    }


def _write_report(target: Path, report: ValidationReport) -> None:
    with atomic_dir(target) as staging:
        write_json(staging / "report.json", report.to_dict())
        write_text(staging / "report.html", report_html(report))
