"""evaluate: score every candidate on the test split at a threshold chosen on valid, pick the best, draw the plots.

Calibration (ECE, reliability), metrics by slice and the curve points go to the evaluation folder, the plots folder
holds PNGs only (offline `dvc plots show`), and the metrics record keeps every candidate's test metrics; register
writes the few headline figures DVC compares.
"""

from __future__ import annotations

from optiflow.assess.calibration import reliability_figure
from optiflow.assess.evaluation import evaluate_candidates
from optiflow.assess.metrics import render_figures
from optiflow.config import Config
from optiflow.io import atomic_dir, read_parquet, write_json, write_with
from tasks.common import StageResult, candidates, publish_table, stage_logger, stage_task


@stage_task("evaluate")
def evaluate(config: Config) -> StageResult:
    params, settings = config.params, config.params.evaluate
    valid, test = read_parquet(config.path("valid")), read_parquet(config.path("test"))
    result = evaluate_candidates(candidates(config), valid, test, params.data, settings, config.path("test"))
    selection = result.selection
    with atomic_dir(config.path("plots")) as staging:  # PNG only: DVC's CSV plots need Vega from the network
        render_figures(result.curves, result.confusion, selection.family, staging)
    with atomic_dir(config.path("evaluation")) as staging:
        for name, table in {**result.curves, "confusion": result.confusion}.items():
            table.to_csv(staging / f"{name}.csv", index=False)
        result.reliability_frame().to_csv(staging / "reliability.csv", index=False)
        result.slices.to_csv(staging / "slices.csv", index=False)
        figure = reliability_figure(result.reliability)
        write_with(staging / "reliability.png", lambda tmp: figure.savefig(tmp, format="png", dpi=110))
    write_json(config.path("metrics"), result.report())
    publish_table(
        "test-metrics",
        result.table_rows(),
        f"Test-split metrics ({len(test)} rows, thresholds by {settings.threshold_policy} on the validation split); "
        f"selected by {selection.metric}: {selection.family}",
    )
    stage_logger().info(
        "selected %s: test %s %.4f at threshold %.3f (ranking %s)",
        selection.family,
        selection.metric,
        selection.score,
        result.threshold,
        selection.ranking,
    )
    return {"stage": "evaluate", "selected": selection.family, "test": result.metrics[selection.family]}
