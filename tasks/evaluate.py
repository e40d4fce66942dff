"""evaluate: choose on the validation split (model, calibration, threshold), then score the final model on the test
split once. The calibrated final model goes to models/selected/ (what fairness, explain and register use);
reliability before and after calibration, metrics by slice and the curve points go to the evaluation folder, the
plots folder holds PNGs only (offline `dvc plots show`), and the metrics record keeps the figures and which data each
decision used; register writes the few headline figures DVC compares.
"""

from __future__ import annotations

from optiflow.assess.calibration import reliability_figure
from optiflow.assess.evaluation import evaluate_candidates
from optiflow.assess.metrics import render_figures
from optiflow.config import Config
from optiflow.io import atomic_dir, read_parquet, write_json, write_with
from optiflow.modeling.candidates import save_candidate
from tasks.common import StageResult, candidates, publish_table, stage_logger, stage_task


@stage_task("evaluate")
def evaluate(config: Config) -> StageResult:
    params, settings = config.params, config.params.evaluate
    valid, test = read_parquet(config.path("valid")), read_parquet(config.path("test"))
    result = evaluate_candidates(
        candidates(config), valid, test, params.data, settings, config.path("test"), params.seed
    )
    selection = result.selection
    with atomic_dir(config.path("selected")) as staging:
        save_candidate(staging, result.model, result.meta)
    with atomic_dir(config.path("plots")) as staging:  # PNG only: DVC's CSV plots need Vega from the network
        render_figures(result.curves, result.confusion, selection.family, staging)
    with atomic_dir(config.path("evaluation")) as staging:
        for name, table in {**result.curves, "confusion": result.confusion}.items():
            table.to_csv(staging / f"{name}.csv", index=False)
        result.reliability_frame().to_csv(staging / "reliability.csv", index=False)
        result.slices.to_csv(staging / "slices.csv", index=False)
        figure = reliability_figure(result.reliability, f"Reliability of {selection.family} (test split)")
        write_with(staging / "reliability.png", lambda tmp: figure.savefig(tmp, format="png", dpi=110))
    write_json(config.path("metrics"), result.report())
    publish_table(
        "validation-metrics",
        result.table_rows(),
        f"Validation-split metrics ({result.valid_rows} rows, thresholds by {settings.threshold_policy}); "
        f"selected by {selection.metric}: {selection.family}",
    )
    stage_logger().info(
        "selected %s on the validation split (ranking %s), %s calibration; test %s %.4f at threshold %.3f, "
        "ECE %.4f (uncalibrated %.4f)",
        selection.family,
        selection.ranking,
        result.calibration.method,
        selection.metric,
        result.test[selection.metric],
        result.threshold,
        result.test["ece"],
        result.test["ece_uncalibrated"],
    )
    return {"stage": "evaluate", "selected": selection.family, "test": result.test}
