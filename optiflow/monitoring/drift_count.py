"""The drift report's headline, how many feature columns drifted, as an Evidently metric that reads the report's own
per-column ValueDrift results. Evidently's DriftedColumnsCount tests every column a second time to count them (a
sixth of the whole check). Imported by check_drift only: it needs Evidently at import."""

from typing import Any, Dict, List  # noqa: UP035 - Evidently's pydantic v1 models read these annotations

from evidently.core.metric_types import BoundTest, CountCalculation, CountMetric
from evidently.legacy.tests.base_test import TestStatus
from evidently.metrics import ValueDrift
from evidently.tests import lt


class DriftedFeatureCount(CountMetric):
    """Count and share of ``columns`` whose ValueDrift test (per-column method and threshold) failed. With a
    reference, the share's test fails at ``drift_share`` or above, as the retraining rule does."""

    columns: List[str]  # noqa: UP006
    methods: Dict[str, str]  # noqa: UP006
    thresholds: Dict[str, float]  # noqa: UP006
    drift_share: float

    def column_drifts(self) -> list[ValueDrift]:
        """The per-column metrics, equal to those the report lists, so each column is tested once."""
        return [
            ValueDrift(column=column, method=self.methods[column], threshold=self.thresholds[column])
            for column in self.columns
        ]

    def _default_tests_with_reference(self, context: Any) -> List[BoundTest]:  # noqa: UP006
        return [lt(self.drift_share).bind_count(self.get_fingerprint(), is_count=False)]


class DriftedFeatureCountCalculation(CountCalculation[DriftedFeatureCount]):
    def calculate(self, context: Any, current_data: Any, reference_data: Any) -> Any:
        drifted = 0
        for drift in self.metric.column_drifts():
            result = context.calculate_metric(drift.to_calculation())
            if not result.tests:
                raise ValueError(f"ValueDrift({drift.column}) has no test to read: run the report with include_tests")
            drifted += any(test.status == TestStatus.FAIL for test in result.tests)
        return self.result(drifted, drifted / len(self.metric.columns)), None

    def display_name(self) -> str:
        return "Drifted feature columns"
