"""The data contract as Great Expectations suites, built from params.yaml and the declared schema.

GX 1.x has no profiler, so the suites are explicit: what a column must be is written in params (`optiflow init`
proposes it from the data, a person reviews it). Two suites share the column rules: the training suite also asks
what only a table to learn from must have (enough rows, both classes, every feature varying, no feature that alone
gives the label away); the batch suite does not, since a batch may be small, one class, or one segment.
"""

from __future__ import annotations

import html
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from optiflow.config import DataParams, ValidateParams
from optiflow.data.schema import Schema

log = logging.getLogger(__name__)

_SUITE = "optiflow"


@dataclass(frozen=True)
class Check:
    """One expectation's outcome, with what was observed when it failed."""

    expectation: str
    column: str | None
    rule: str
    success: bool
    observed: str


@dataclass(frozen=True)
class ValidationReport:
    source: str
    rows: int
    checks: tuple[Check, ...] = field(default_factory=tuple)

    @property
    def success(self) -> bool:
        return all(check.success for check in self.checks)

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(check for check in self.checks if not check.success)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rows": self.rows,
            "success": self.success,
            "evaluated": len(self.checks),
            "failed": len(self.failures),
            "checks": [asdict(check) for check in self.checks],
        }

    def table_rows(self) -> list[dict[str, Any]]:
        """One row per expectation, for people: where, what, the rule, what was observed, whether it held."""
        return [
            {
                "column": c.column or "(table)",
                "expectation": c.expectation,
                "rule": c.rule,
                "observed": c.observed,
                "success": c.success,
            }
            for c in self.checks
        ]

    def failure_message(self) -> str:
        lines = [f"{self.source}: {len(self.failures)} of {len(self.checks)} expectations failed ({self.rows} rows):"]
        for check in self.failures:
            where = f"column {check.column!r}" if check.column else "table"
            lines.append(f"  - {where}: {check.expectation} [{check.rule}] -> observed {check.observed}")
        return "\n".join(lines)


def build_expectations(
    schema: Schema, data: DataParams, rules: ValidateParams, *, batch: bool = False, labelled: bool = True
) -> list[Any]:
    """The training suite, or with ``batch=True`` the batch suite, as GX expectation objects in a stable order."""
    if batch:
        return batch_expectations(schema, data, rules, labelled=labelled)
    return training_expectations(schema, data, rules)


def training_expectations(schema: Schema, data: DataParams, rules: ValidateParams) -> list[Any]:
    """What a table to learn from must have: the column rules, at least ``min_rows`` rows, exactly the two labels,
    and every feature taking at least two values (a constant column teaches nothing)."""
    import great_expectations.expectations as gxe

    labels = [data.negative_label, data.positive_label]
    return [
        gxe.ExpectTableRowCountToBeBetween(min_value=rules.min_rows),
        *_column_expectations(schema, data, rules, labelled=True),
        *(gxe.ExpectColumnUniqueValueCountToBeBetween(column=column, min_value=2) for column in schema.features),
        gxe.ExpectColumnDistinctValuesToEqualSet(column=data.target, value_set=labels),
        *_id_expectations(data),
    ]


def batch_expectations(schema: Schema, data: DataParams, rules: ValidateParams, *, labelled: bool) -> list[Any]:
    """What every batch to score or monitor must meet: the column rules, and its labels (when it carries them)
    among the two; it may be small, hold one class, or come from a single segment (one value in a column)."""
    import great_expectations.expectations as gxe

    labels = [data.negative_label, data.positive_label]
    return [
        *_column_expectations(schema, data, rules, labelled=labelled),
        *([gxe.ExpectColumnValuesToBeInSet(column=data.target, value_set=labels)] if labelled else []),
        *_id_expectations(data),
    ]


def _column_expectations(schema: Schema, data: DataParams, rules: ValidateParams, *, labelled: bool) -> list[Any]:
    """The rules every column holds in any table: present, typed, missing values within bounds, in range, in
    domain."""
    import great_expectations.expectations as gxe

    columns = [*([data.target] if labelled else []), *data.id_columns, *schema.features]
    expectations: list[Any] = [gxe.ExpectColumnToExist(column=column) for column in columns]
    expectations += [
        gxe.ExpectColumnToExist(column=column) for column in data.sensitive_features if column not in columns
    ]
    for column in schema.numeric:
        expectations.append(
            gxe.ExpectColumnValuesToBeInTypeList(column=column, type_list=["float64", "float32", "int64", "int32"])
        )
    for column in columns:
        allowed = (
            0.0
            if column in (data.target, *data.id_columns)
            else rules.null_fraction.get(column, rules.max_null_fraction)
        )
        expectations.append(gxe.ExpectColumnValuesToNotBeNull(column=column, mostly=1.0 - allowed))
    for column, (low, high) in rules.ranges.items():
        expectations.append(gxe.ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=high))
    for column, domain in rules.domains.items():
        expectations.append(gxe.ExpectColumnValuesToBeInSet(column=column, value_set=list(domain)))
    return expectations


def _id_expectations(data: DataParams) -> list[Any]:
    import great_expectations.expectations as gxe

    if len(data.id_columns) == 1:
        return [gxe.ExpectColumnValuesToBeUnique(column=data.id_columns[0])]
    if data.id_columns:
        return [gxe.ExpectCompoundColumnsToBeUnique(column_list=list(data.id_columns))]
    return []


def validate_frame(
    frame: pd.DataFrame,
    schema: Schema,
    data: DataParams,
    rules: ValidateParams,
    source: str,
    *,
    batch: bool = False,
) -> ValidationReport:
    """Run the training suite (or the batch suite) on a frame in an ephemeral GX context; never raises on failed
    expectations. A batch's labels are checked when present; the leakage check runs on a training table only."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_definition = (
        context.data_sources.add_or_update_pandas("optiflow")
        .add_dataframe_asset("table")
        .add_batch_definition_whole_dataframe("whole")
    )
    labelled = not batch or data.target in frame.columns
    # The whole suite at once: each add_expectation on a stored suite re-serialises all of it (70% of the time).
    expectations = build_expectations(schema, data, rules, batch=batch, labelled=labelled)
    suite = context.suites.add_or_update(gx.ExpectationSuite(name=_SUITE, expectations=expectations))
    definition = gx.ValidationDefinition(name=_SUITE, data=batch_definition, suite=suite)
    result = definition.run(batch_parameters={"dataframe": frame})
    columns = set(frame.columns)
    checks = tuple(_to_check(outcome, columns) for outcome in result.results) + empty_column_checks(frame, schema)
    if not batch:
        checks += leakage_checks(frame, schema, data, rules.max_feature_auc, rules.allow_leakage)
    return ValidationReport(source=source, rows=len(frame), checks=checks)


EMPTY = "optiflow_column_has_values"


def empty_column_checks(frame: pd.DataFrame, schema: Schema) -> tuple[Check, ...]:
    """A feature column with no value at all, named as such (an export that lost a column), whatever share of
    missing values the rules allow."""
    return tuple(
        Check(
            expectation=EMPTY,
            column=column,
            rule="at least one value",
            success=bool(frame[column].notna().any()),
            observed=(
                "has values"
                if frame[column].notna().any()
                else f"all {len(frame)} values are missing: the column is empty (a broken export?)"
            ),
        )
        for column in schema.features
        if column in frame.columns and len(frame)
    )


LEAKAGE = "optiflow_feature_does_not_reveal_target"


def leakage_checks(
    frame: pd.DataFrame, schema: Schema, data: DataParams, max_auc: float | None, allowed: tuple[str, ...] = ()
) -> tuple[Check, ...]:
    """Flag a feature that on its own gives the label away: one that is a function of the target (one value per
    class), or whose single-feature ROC AUC is at least ``max_auc`` (or at most 1 - ``max_auc``).

    Such a column is almost always the label under another name or something recorded after the outcome: a model
    trained on it looks perfect and is useless in production. Categoricals are scored by their per-value positive
    rate; id-like categoricals (more distinct values than half the rows) are skipped, as any such column looks pure.
    Columns in ``allowed`` (validate.allow_leakage) are not checked.
    """
    if max_auc is None or data.target not in frame.columns:
        return ()
    target = frame[data.target]
    if target.isna().any() or target.nunique() != 2:
        return ()  # the target's own expectations report this; an AUC needs exactly two classes
    positive = (target == data.positive_label).astype(int)
    rule = f"single-feature ROC AUC within ({1 - max_auc:.3g}, {max_auc:.3g}); validate.allow_leakage lets it through"
    checks = []
    for column in schema.features:
        if column not in frame.columns or column in allowed:
            continue
        score = _single_feature_auc(frame[column], positive, categorical=column in schema.categorical)
        mapping = _function_of_target(frame[column], target)
        if score is None and mapping is None:
            continue
        observed = [f"single-feature ROC AUC {score:.3f}"] if score is not None else []
        observed += [f"a function of the target: {mapping}"] if mapping is not None else []
        checks.append(
            Check(
                expectation=LEAKAGE,
                column=column,
                rule=rule,
                success=mapping is None and score is not None and 1 - max_auc < score < max_auc,
                observed="; ".join(observed),
            )
        )
    return tuple(checks)


def _function_of_target(values: pd.Series, target: pd.Series) -> str | None:
    """``'No' -> 'yearly', 'Yes' -> 'monthly'`` when the column holds one value per class (and they differ)."""
    present = values.notna()
    per_class = values[present].groupby(target[present]).unique()
    if len(per_class) != 2 or any(len(found) != 1 for found in per_class):
        return None
    if per_class.iloc[0][0] == per_class.iloc[1][0]:
        return None
    return ", ".join(f"{_plain(label)!r} -> {_plain(found[0])!r}" for label, found in per_class.items())


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds (so it prints as 10.0, not np.float64(10.0))."""
    return value.item() if hasattr(value, "item") else value


def _single_feature_auc(values: pd.Series, positive: pd.Series, categorical: bool) -> float | None:
    from sklearn.metrics import roc_auc_score

    present = values.notna()
    values, positive = values[present], positive[present]
    if positive.nunique() != 2 or values.nunique() < 2:
        return None
    if categorical or not pd.api.types.is_numeric_dtype(values):
        if values.nunique() > len(values) / 2:
            return None
        values = positive.groupby(values.astype(str)).transform("mean")
    return float(roc_auc_score(positive, values.astype(float)))


def report_html(report: ValidationReport) -> str:
    """A self-contained page: one row per expectation, failures first."""
    status = "passed" if report.success else "FAILED"
    rows = []
    for check in sorted(report.checks, key=lambda c: c.success):
        colour = "#e6f4ea" if check.success else "#fde7e9"
        rows.append(
            f'<tr style="background:{colour}"><td>{"pass" if check.success else "FAIL"}</td>'
            f"<td>{html.escape(check.column or '(table)')}</td><td>{html.escape(check.expectation)}</td>"
            f"<td>{html.escape(check.rule)}</td><td>{html.escape(check.observed)}</td></tr>"
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Validation report</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}</style></head><body>"
        f"<h1>Data validation {status}</h1><p>Source: <code>{html.escape(report.source)}</code>, "
        f"{report.rows} rows, {len(report.checks)} expectations, {len(report.failures)} failed.</p>"
        "<table><tr><th>result</th><th>column</th><th>expectation</th><th>rule</th><th>observed</th></tr>"
        + "".join(rows)
        + "</table></body></html>\n"
    )


_RULE_KEYS = ("min_value", "max_value", "value_set", "type_list", "mostly", "column_list")


def _to_check(outcome: Any, columns: set[str]) -> Check:
    config = outcome.expectation_config
    kwargs = dict(config.kwargs)
    if config.type == "expect_column_values_to_not_be_null":
        rule = f"nulls <= {(1.0 - kwargs.get('mostly', 1.0)) * 100:.1f}%"
    else:
        rule = ", ".join(f"{key}={_short(kwargs[key])}" for key in _RULE_KEYS if kwargs.get(key) is not None)
    column = kwargs.get("column")
    observed = "column is missing" if column is not None and column not in columns else _observed(outcome)
    return Check(
        expectation=config.type,
        column=column,
        rule=rule or "-",
        success=bool(outcome.success),
        observed=observed,
    )


def _observed(outcome: Any) -> str:
    result = outcome.result or {}
    exception = (outcome.exception_info or {}).get("exception_message")
    if exception:
        return f"error: {exception}"
    if result.get("observed_value") is not None:
        return _short(result["observed_value"])
    if "unexpected_count" in result:
        text = f"{result['unexpected_count']} unexpected ({result.get('unexpected_percent') or 0:.2f}%)"
        examples = result.get("partial_unexpected_list") or []
        if examples:
            text += f", e.g. {_short(examples[:3])}"
        missing = result.get("partial_missing_list") or []
        if missing:
            text += f"; expected but absent: {_short(missing)}"
        return text
    return "ok" if outcome.success else "failed"


def _short(value: Any, limit: int = 120) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
