"""The Great Expectations suite: passes clean data, and reports every broken rule with what it saw."""

from __future__ import annotations

import pandas as pd
import pytest

from optiflow.config import parse_params
from optiflow.data.schema import Schema
from optiflow.data.validation import EMPTY, LEAKAGE, report_html, validate_frame
from tests.conftest import shipped_params

SCHEMA = Schema(numeric=("tenure", "charges"), categorical=("contract", "female"))


def _params(**validate):
    raw = shipped_params()
    raw["data"].update(id_columns=["customer"], sensitive_features=["female"], feature_types=None)
    raw["validate"] = {
        "min_rows": 4,
        "ranges": {"tenure": [0, 100]},
        "domains": {"contract": ["monthly", "yearly"]},
        **validate,
    }
    params = parse_params(raw)
    return params.data, params.validation


def _frame(rows: int = 6) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer": [f"c{i}" for i in range(rows)],
            "churn": [("Yes", "No", "No", "Yes")[i % 4] for i in range(rows)],  # no feature mirrors it
            "tenure": [float(i) for i in range(rows)],
            "charges": [10.0 + i for i in range(rows)],
            "contract": ["monthly", "yearly"] * (rows // 2),
            "female": [0, 1] * (rows // 2),
        }
    )


def _validate(frame: pd.DataFrame, **validate):
    data, rules = _params(**validate)
    return validate_frame(frame, SCHEMA, data, rules, "input.csv")


def test_clean_frame_passes() -> None:
    report = _validate(_frame())
    assert report.success and report.failures == ()
    assert len(report.checks) > 10


def _failed(report) -> dict[tuple[str | None, str], str]:
    return {(c.column, c.expectation): c.observed for c in report.failures}


@pytest.mark.parametrize(
    ("breakage", "column", "expectation", "observed"),
    [
        (
            lambda f: f.assign(churn=["Yes", "No", "Maybe", "No", "Yes", "No"]),
            "churn",
            "expect_column_distinct_values_to_equal_set",
            "Maybe",
        ),
        (lambda f: f.assign(churn="No"), "churn", "expect_column_distinct_values_to_equal_set", "absent: ['Yes']"),
        (lambda f: f.assign(charges=None), "charges", "expect_column_values_to_not_be_null", "6 unexpected (100.00%)"),
        (
            lambda f: f.assign(tenure=[-1.0, 1, 2, 3, 4, 500]),
            "tenure",
            "expect_column_values_to_be_between",
            "2 unexpected",
        ),
        (
            lambda f: f.assign(contract=["monthly", "weekly"] * 3),
            "contract",
            "expect_column_values_to_be_in_set",
            "weekly",
        ),
        (lambda f: f.assign(customer=["c1"] * 6), "customer", "expect_column_values_to_be_unique", "6 unexpected"),
        (lambda f: f.assign(tenure=["1"] * 6), "tenure", "expect_column_values_to_be_in_type_list", "e.g. ['1'"),
        (lambda f: f.drop(columns=["female"]), "female", "expect_column_to_exist", "column is missing"),
    ],
    ids=[
        "third-label",
        "one-class",
        "all-null",
        "out-of-range",
        "unknown-category",
        "duplicate-ids",
        "wrong-type",
        "missing-sensitive",
    ],
)
def test_each_broken_rule_is_reported_with_observed_value(breakage, column, expectation, observed) -> None:
    report = _validate(breakage(_frame()))
    failed = _failed(report)
    assert (column, expectation) in failed, failed
    assert observed in failed[(column, expectation)]
    assert f"column {column!r}" in report.failure_message()


def test_too_few_rows() -> None:
    report = _validate(_frame(), min_rows=100)
    assert _failed(report)[(None, "expect_table_row_count_to_be_between")] == "6"


def test_every_failure_is_listed_together() -> None:
    broken = _frame().assign(charges=None, contract=["monthly", "weekly"] * 3)
    report = _validate(broken)
    message = report.failure_message()
    assert len(report.failures) == 4  # charges: null, no distinct value and empty; contract: unknown category
    assert "4 of" in message and "'charges'" in message and "'contract'" in message


def test_constant_feature_fails() -> None:
    failed = _failed(_validate(_frame().assign(contract="monthly")))
    assert failed[("contract", "expect_column_unique_value_count_to_be_between")] == "1"


@pytest.mark.parametrize(
    ("column", "leak"),
    [
        ("contract", lambda churn: churn.map({"Yes": "monthly", "No": "yearly"})),
        ("charges", lambda churn: (churn == "Yes") * 100.0 + 5.0),
        ("tenure", lambda churn: (churn == "No") * 10.0),  # perfectly inverted is as leaky as perfectly aligned
    ],
)
def test_a_feature_that_reveals_the_target_is_flagged_as_leakage(column, leak) -> None:
    frame = _frame(8)
    report = _validate(frame.assign(**{column: leak(frame["churn"])}))
    failed = _failed(report)
    assert failed == {(column, LEAKAGE): failed[(column, LEAKAGE)]}
    assert "AUC 1.000" in failed[(column, LEAKAGE)] or "AUC 0.000" in failed[(column, LEAKAGE)]
    assert _validate(frame.assign(**{column: leak(frame["churn"])}), max_feature_auc=None).success


def test_null_allowance_per_column() -> None:
    frame = _frame().assign(charges=[None, 1.0, 2.0, 3.0, 4.0, 5.0])
    assert not _validate(frame).success
    assert _validate(frame, null_fraction={"charges": 0.2}).success


def test_html_report_lists_failures_first() -> None:
    page = report_html(_validate(_frame().assign(contract="weekly")))
    assert page.index("FAIL") < page.index(">pass<")
    assert "Data validation FAILED" in page


def test_serving_batch_form_of_the_suite() -> None:
    """A batch: small is fine, one class is fine, no labels is fine; ranges and domains still hold."""
    data, rules = _params()
    small_one_class = _frame(2).assign(churn="No")
    assert not validate_frame(small_one_class, SCHEMA, data, rules, "b.csv").success  # the training form refuses
    assert validate_frame(small_one_class, SCHEMA, data, rules, "b.csv", batch=True).success
    unlabelled = validate_frame(_frame().drop(columns=["churn"]), SCHEMA, data, rules, "b.csv", batch=True)
    assert unlabelled.success and all(check.column != "churn" for check in unlabelled.checks)
    broken = _frame().assign(tenure=500.0, churn="Maybe")
    failed = _failed(validate_frame(broken, SCHEMA, data, rules, "b.csv", batch=True))
    assert ("tenure", "expect_column_values_to_be_between") in failed
    assert ("churn", "expect_column_values_to_be_in_set") in failed


def test_a_column_that_is_a_function_of_the_target_is_named_and_allowed_by_name() -> None:
    frame = _frame(8)
    leaky = frame.assign(contract=frame["churn"].map({"Yes": "closed", "No": "open"}))
    failed = _failed(_validate(leaky, domains={}))
    assert "a function of the target: 'No' -> 'open', 'Yes' -> 'closed'" in failed[("contract", LEAKAGE)]
    assert "single-feature ROC AUC 1.000" in failed[("contract", LEAKAGE)]
    assert _validate(leaky, domains={}, allow_leakage=["contract"]).success


def test_leakage_is_flagged_from_an_auc_of_0_98() -> None:
    frame = _frame(100).assign(churn=["Yes"] * 50 + ["No"] * 50)

    def shifted(shift: int) -> list[float]:  # the positives' values are the negatives' moved up by `shift`
        return [float(i + shift) for i in range(50)] + [float(i) for i in range(50)]

    flagged = _failed(_validate(frame.assign(charges=shifted(40)), domains={}, ranges={}))
    assert flagged[("charges", LEAKAGE)] == "single-feature ROC AUC 0.980"
    assert ("charges", LEAKAGE) not in _failed(_validate(frame.assign(charges=shifted(35)), domains={}, ranges={}))


def test_an_all_missing_column_is_named_as_empty_in_both_suites() -> None:
    data, rules = _params(null_fraction={"charges": 1.0})
    frame = _frame().assign(charges=None)
    for batch in (False, True):
        failed = _failed(validate_frame(frame, SCHEMA, data, rules, "b.csv", batch=batch))
        assert failed[("charges", EMPTY)] == "all 6 values are missing: the column is empty (a broken export?)"


def test_a_single_segment_batch_is_valid_where_a_training_table_is_not() -> None:
    """A batch from one region or one contract type is legitimate; a training table with a constant column is not."""
    data, rules = _params()
    one_segment = _frame().assign(contract="monthly", female=1)
    assert validate_frame(one_segment, SCHEMA, data, rules, "b.csv", batch=True).success
    training = _failed(validate_frame(one_segment, SCHEMA, data, rules, "t.csv"))
    assert ("contract", "expect_column_unique_value_count_to_be_between") in training


def test_the_leakage_check_is_for_training_tables_only() -> None:
    data, rules = _params()
    frame = _frame(8)
    leaky = frame.assign(charges=(frame["churn"] == "Yes") * 100.0 + 5.0)
    batch = validate_frame(leaky, SCHEMA, data, rules, "b.csv", batch=True)
    assert batch.success and all(check.expectation != LEAKAGE for check in batch.checks)
