"""fairness: fairlearn group metrics of the selected model at its threshold, the disparity gates, and mitigation.

Gates failing on the validation split with fairness.mitigate on fit a ThresholdOptimizer there, reported on the
test split next to the original. It is reported, not registered: a fitted ThresholdOptimizer cannot be saved with
skops, and Optiflow never stores models with pickle.
"""

from __future__ import annotations

from optiflow.assess.fairness import assess_fairness
from optiflow.config import Config
from optiflow.io import read_json, read_parquet, write_json, write_with
from tasks.common import StageResult, publish_table, stage_logger, stage_task


@stage_task("fairness")
def fairness(config: Config) -> StageResult:
    params = config.params
    metrics = read_json(config.path("metrics"))
    family, candidate = metrics["selected"], config.path("selected")
    test, valid = read_parquet(config.path("test")), read_parquet(config.path("valid"))
    result = assess_fairness(metrics, candidate, test, valid, params.data, params.fairness, params.seed)
    gates, payload = result.gates, result.payload
    write_with(config.path("fairness_table"), lambda tmp: result.table.to_csv(tmp, index=False))
    write_json(config.path("fairness"), payload)
    publish_table(
        "fairness",
        result.table_rows(),
        f"Fairness of {family} at threshold {payload['threshold']:.3f} by {payload['sensitive_features']}: "
        f"{gates.message()}",
    )
    stage_logger().info("fairness of %s: %s", family, gates.message())
    return {
        "stage": "fairness",
        "passed": gates.passed,
        "failures": [r.describe() for r in gates.failures],
        "mitigated": payload["mitigation"] is not None,
    }
