"""evaluate: score every candidate on the test split at a threshold chosen on valid, pick the best, draw the plots.

Calibration (ECE, reliability) and metrics by slice go to the evaluation folder; metrics.json keeps the numbers
DVC compares.
"""

from __future__ import annotations

import pandas as pd

from optiflow.assess.calibration import (
    decision_threshold,
    expected_calibration_error,
    reliability_figure,
    reliability_table,
    slice_metrics,
)
from optiflow.assess.metrics import (
    classification_metrics,
    confusion_table,
    curve_tables,
    render_figures,
    select_best,
    slice_specs,
)
from optiflow.config import Config
from optiflow.data.split import labels
from optiflow.errors import DataError
from optiflow.io import atomic_dir, read_parquet, write_json, write_with
from optiflow.modeling.candidates import load_candidate
from tasks.common import StageResult, candidates, publish_table, stage_logger, stage_task


@stage_task("evaluate")
def evaluate(config: Config) -> StageResult:
    params, settings = config.params, config.params.evaluate
    valid, test = read_parquet(config.path("valid")), read_parquet(config.path("test"))
    y_valid, y_test = labels(valid, params.data), labels(test, params.data)
    specs = slice_specs(params.data, settings.slices)
    named = {column for spec in specs for column in ((spec,) if isinstance(spec, str) else spec)}
    missing = sorted(named - set(test.columns))
    if missing:
        raise DataError(
            f"{config.path('test')}: slice column(s) {missing} named in data.sensitive_features or evaluate.slices "
            f"are not in the data; columns: {sorted(test.columns)}"
        )
    scores, metrics, reliability, slices = {}, {}, {}, []
    for family, folder in candidates(config).items():
        model, _ = load_candidate(folder)
        threshold = decision_threshold(y_valid, model.predict_proba(valid)[:, 1], settings)
        scores[family] = model.predict_proba(test)[:, 1]
        metrics[family] = {
            **classification_metrics(y_test, scores[family], threshold),
            "ece": expected_calibration_error(y_test, scores[family], settings.calibration_bins),
            "threshold": threshold,
        }
        reliability[family] = reliability_table(y_test, scores[family], settings.calibration_bins)
        slices.append(slice_metrics(test, y_test, scores[family], threshold, specs).assign(family=family))
    selection = select_best(metrics, settings.primary_metric)
    threshold = metrics[selection.family]["threshold"]

    curves = curve_tables(y_test, scores)
    confusion = confusion_table(y_test, scores[selection.family], threshold)
    with atomic_dir(config.path("plots")) as staging:
        for name, table in {**curves, "confusion": confusion}.items():
            table.to_csv(staging / f"{name}.csv", index=False)
        render_figures(curves, confusion, selection.family, staging)
    with atomic_dir(config.path("evaluation")) as staging:
        pd.concat([t.assign(family=f) for f, t in reliability.items()]).to_csv(staging / "reliability.csv", index=False)
        pd.concat(slices, ignore_index=True).to_csv(staging / "slices.csv", index=False)
        figure = reliability_figure(reliability)
        write_with(staging / "reliability.png", lambda tmp: figure.savefig(tmp, format="png", dpi=110))
    write_json(
        config.path("metrics"),
        {
            "primary_metric": selection.metric,
            "selected": selection.family,
            "threshold": threshold,
            "threshold_policy": settings.threshold_policy,
            "test_rows": len(test),
            "test": metrics[selection.family],
            "candidates": metrics,
        },
    )
    publish_table(
        "test-metrics",
        [{"family": family, "selected": family == selection.family, **values} for family, values in metrics.items()],
        f"Test-split metrics ({len(test)} rows, thresholds by {settings.threshold_policy} on the validation split); "
        f"selected by {selection.metric}: {selection.family}",
    )
    stage_logger().info(
        "selected %s: test %s %.4f at threshold %.3f (ranking %s)",
        selection.family,
        selection.metric,
        selection.score,
        threshold,
        selection.ranking,
    )
    return {"stage": "evaluate", "selected": selection.family, "test": metrics[selection.family]}
