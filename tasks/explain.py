"""explain: SHAP global importance of the selected model, its plots, and a permutation-importance cross-check.

Per-row reason codes stay a core function (optiflow.assess.explain.reason_codes) for the scoring flow.
"""

from __future__ import annotations

from optiflow.assess.explain import explain_model, importance_figures
from optiflow.config import Config
from optiflow.io import atomic_dir, read_json, read_parquet, write_json, write_with
from optiflow.modeling.candidates import load_candidate, uncalibrated
from tasks.common import StageResult, stage_logger, stage_task


@stage_task("explain")
def explain(config: Config) -> StageResult:
    params, settings = config.params, config.params.explain
    family = read_json(config.path("metrics"))["selected"]
    model = uncalibrated(load_candidate(config.path("selected"))[0])  # SHAP explains the scores calibration rescales
    train, test = read_parquet(config.path("train")), read_parquet(config.path("test"))
    result = explain_model(model, train, test, params.data, settings, params.seed)
    with atomic_dir(config.path("explain")) as staging:
        result.importance.to_csv(staging / "importance.csv", index=False)
        result.permutation.to_csv(staging / "permutation.csv", index=False)
        plots = []
        for name, figure in importance_figures(result.explanation, top_k=settings.top_k).items():
            write_with(
                staging / f"{name}.png",
                lambda tmp, f=figure: f.savefig(tmp, format="png", dpi=100, bbox_inches="tight"),
            )
            plots.append(f"{name}.png")
        write_json(staging / "summary.json", result.summary(family, plots))
    top = list(result.top["name"][:3])
    stage_logger().info(
        "explained %s (%s SHAP, %d rows): top %s; %d disagreement(s) with permutation importance",
        family,
        result.explanation.kind,
        len(result.explanation.values),
        top,
        len(result.disagreements),
    )
    return {"stage": "explain", "model": family, "top_columns": top, "disagreements": len(result.disagreements)}
