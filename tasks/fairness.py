"""fairness: fairlearn group metrics of the selected model at its threshold, the disparity gates, and mitigation.

A failing gate with fairness.mitigate on fits a ThresholdOptimizer on the validation split and reports it on the
test split next to the original. It is reported, not registered: a fitted ThresholdOptimizer cannot be saved with
skops, and Optiflow never stores models with pickle.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from optiflow.assess.fairness import (
    GROUP_METRICS,
    columns_to_mitigate,
    evaluate_mitigation,
    fairness_gates,
    group_metrics,
    mitigate,
)
from optiflow.assess.gates import GateReport
from optiflow.config import Config
from optiflow.data.split import labels
from optiflow.io import finite_or_none, read_json, read_parquet, write_json, write_with
from optiflow.modeling.candidates import load_candidate
from tasks.common import StageResult, candidates, publish_table, stage_logger, stage_task

NOT_REGISTERED = "reported only: a fitted ThresholdOptimizer cannot be saved with skops, so it is not registered"


@stage_task("fairness")
def fairness(config: Config) -> StageResult:
    params, settings, log = config.params, config.params.fairness, stage_logger()
    metrics = read_json(config.path("metrics"))
    family = metrics["selected"]
    threshold = metrics["candidates"][family]["threshold"]
    sensitive = list(params.data.sensitive_features)
    payload: dict[str, Any] = {"model": family, "threshold": threshold, "sensitive_features": sensitive}
    table = pd.DataFrame(columns=["model", "feature", "group", *GROUP_METRICS])
    if not sensitive:
        gates = GateReport(())
        payload.update(report=None, mitigation=None, note="no data.sensitive_features declared; nothing to check")
    else:
        model, _ = load_candidate(candidates(config)[family])
        test = read_parquet(config.path("test"))
        y_test, scores = labels(test, params.data), model.predict_proba(test)[:, 1]
        report = group_metrics(y_test, scores, threshold, test[sensitive])
        gates = GateReport(tuple(fairness_gates(report, settings)))
        table = report.table().assign(model=family)
        payload.update(report=report.to_dict(), mitigation=None)
        if not gates.passed and settings.mitigate:
            columns = columns_to_mitigate(report, settings)
            valid = read_parquet(config.path("valid"))
            fitted = mitigate(
                model, valid, labels(valid, params.data), valid[list(columns)], settings.constraint, params.seed
            )
            result = evaluate_mitigation(y_test, scores, threshold, fitted.predict(test, test), test[sensitive])
            after = GateReport(tuple(fairness_gates(result.mitigated, settings)))
            name = f"{family}+{settings.mitigation}"
            table = pd.concat([table, result.mitigated.table().assign(model=name)], ignore_index=True)
            payload["mitigation"] = {
                "model": name,
                "columns": list(columns),
                "constraint": settings.constraint,
                "fitted_on": "valid",
                "thresholds": fitted.thresholds(),
                "gates": after.to_dict(),
                "registered": False,
                "note": NOT_REGISTERED,
                **result.to_dict(),
            }
            log.info(
                "mitigated on %s (%s): accuracy cost %.4f; gates after: %s",
                columns,
                settings.constraint,
                result.accuracy_cost,
                after.message(),
            )
    payload.update(passed=gates.passed, message=gates.message(), gates=[r.to_dict() for r in gates.results])
    table = table[["model", "feature", "group", *GROUP_METRICS]]
    write_with(config.path("fairness_table"), lambda tmp: table.to_csv(tmp, index=False))
    write_json(config.path("fairness"), payload)
    publish_table(
        "fairness",
        [
            {key: finite_or_none(value) if isinstance(value, float) else value for key, value in row.items()}
            for row in table.to_dict("records")
        ],
        f"Fairness of {family} at threshold {threshold:.3f} by {sensitive}: {gates.message()}",
    )
    log.info("fairness of %s: %s", family, gates.message())
    return {
        "stage": "fairness",
        "passed": gates.passed,
        "failures": [r.describe() for r in gates.failures],
        "mitigated": payload["mitigation"] is not None,
    }
