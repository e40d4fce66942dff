"""validate: run the Great Expectations suite; a failure stops the DAG and leaves the last good report alone."""

from __future__ import annotations

from optiflow.config import Config
from optiflow.errors import ValidationFailed
from optiflow.ingest import resolve_schema
from optiflow.io import atomic_dir, read_parquet, write_json, write_text
from optiflow.validation import ValidationReport, report_html, validate_frame
from tasks.common import StageResult, publish_table, stage_logger, stage_task


@stage_task("validate")
def validate(config: Config) -> StageResult:
    data = config.params.data
    frame = read_parquet(config.path("dataset"))
    report = validate_frame(frame, resolve_schema(frame, data), data, config.params.validation, data.source)
    publish_table(
        "validation",
        [
            {
                "column": c.column or "(table)",
                "expectation": c.expectation,
                "rule": c.rule,
                "observed": c.observed,
                "success": c.success,
            }
            for c in report.checks
        ],
        f"Great Expectations: {len(report.failures)} of {len(report.checks)} expectations failed",
    )
    if not report.success:
        failures = config.path("validation_failures")
        _write_report(failures, report)
        raise ValidationFailed(
            f"{report.failure_message()}\nFull report: {(failures / 'report.html').relative_to(config.root)}"
        )
    _write_report(config.path("validation"), report)
    stage_logger().info("validation passed: %d expectations on %d rows", len(report.checks), report.rows)
    return {"stage": "validate", "expectations": len(report.checks), "failed": 0}


def _write_report(target, report: ValidationReport) -> None:
    with atomic_dir(target) as staging:
        write_json(staging / "report.json", report.to_dict())
        write_text(staging / "report.html", report_html(report))
