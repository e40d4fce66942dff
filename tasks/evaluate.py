"""evaluate: score every candidate on the test split, pick the best by the primary metric, draw the plots."""

from __future__ import annotations

from optiflow.config import Config
from optiflow.evaluation import classification_metrics, confusion_table, curve_tables, render_figures, select_best
from optiflow.io import atomic_dir, read_parquet, write_json
from optiflow.models import load_candidate
from optiflow.split import labels
from tasks.common import StageResult, publish_table, stage_logger, stage_task


@stage_task("evaluate")
def evaluate(config: Config) -> StageResult:
    params = config.params
    test = read_parquet(config.path("test"))
    y_true = labels(test, params.data)
    scores, metrics = {}, {}
    for folder in sorted(p for p in config.path("candidates").iterdir() if p.is_dir()):
        model, meta = load_candidate(folder)
        scores[meta["family"]] = model.predict_proba(test)[:, 1]
        metrics[meta["family"]] = classification_metrics(y_true, scores[meta["family"]], params.evaluate.threshold)
    selection = select_best(metrics, params.evaluate.primary_metric)

    curves = curve_tables(y_true, scores)
    confusion = confusion_table(y_true, scores[selection.family], params.evaluate.threshold)
    with atomic_dir(config.path("plots")) as staging:
        for name, table in {**curves, "confusion": confusion}.items():
            table.to_csv(staging / f"{name}.csv", index=False)
        render_figures(curves, confusion, selection.family, staging)
    write_json(
        config.path("metrics"),
        {
            "primary_metric": selection.metric,
            "selected": selection.family,
            "threshold": params.evaluate.threshold,
            "test_rows": len(test),
            "test": metrics[selection.family],
            "candidates": metrics,
        },
    )
    publish_table(
        "test-metrics",
        [{"family": family, "selected": family == selection.family, **values} for family, values in metrics.items()],
        f"Test-split metrics ({len(test)} rows); selected by {selection.metric}: {selection.family}",
    )
    stage_logger().info(
        "selected %s: test %s %.4f (ranking %s)", selection.family, selection.metric, selection.score, selection.ranking
    )
    return {"stage": "evaluate", "selected": selection.family, "test": metrics[selection.family]}
