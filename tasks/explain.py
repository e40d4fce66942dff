"""explain: SHAP global importance of the selected model, its plots, and a permutation-importance cross-check.

Per-row reason codes stay a core function (optiflow.assess.explain.reason_codes) for the scoring flow.
"""

from __future__ import annotations

from threadpoolctl import threadpool_limits

from optiflow.assess.explain import (
    compare_importances,
    explain_global,
    global_importance,
    importance_figures,
    permutation_check,
    shap_by_column,
)
from optiflow.config import Config
from optiflow.data.sampling import sample_rows
from optiflow.data.schema import resolve_schema
from optiflow.data.split import labels
from optiflow.io import atomic_dir, read_json, read_parquet, write_json, write_with
from optiflow.modeling.candidates import load_candidate
from tasks.common import StageResult, candidates, stage_logger, stage_task


@stage_task("explain")
def explain(config: Config) -> StageResult:
    params, settings = config.params, config.params.explain
    family = read_json(config.path("metrics"))["selected"]
    model, _ = load_candidate(candidates(config)[family])
    train, test = read_parquet(config.path("train")), read_parquet(config.path("test"))
    features = list(resolve_schema(test, params.data).features)
    background = sample_rows(train[features], settings.background_rows, params.seed)
    explanation = explain_global(model, test[features], background, max_rows=settings.max_rows, seed=params.seed)
    importance = global_importance(explanation)
    # the same seeded sample explain_global draws, so SHAP and permutation importance judge the same rows
    sample = sample_rows(test[features], settings.max_rows, params.seed)
    # one thread: the ~100 predict calls of permutation importance stall in OpenMP on a busy host (100x slower)
    with threadpool_limits(limits=1):
        permutation = permutation_check(
            model, sample, labels(test.loc[sample.index], params.data), params.seed, settings.permutation_repeats
        )
    notes = compare_importances(shap_by_column(importance), permutation, settings.max_rank_gap)
    top = importance[importance["level"] == "column"].head(max(settings.top_k, 5))
    with atomic_dir(config.path("explain")) as staging:
        importance.to_csv(staging / "importance.csv", index=False)
        permutation.to_csv(staging / "permutation.csv", index=False)
        plots = []
        for name, figure in importance_figures(explanation, top_k=settings.top_k).items():
            write_with(
                staging / f"{name}.png",
                lambda tmp, f=figure: f.savefig(tmp, format="png", dpi=100, bbox_inches="tight"),
            )
            plots.append(f"{name}.png")
        write_json(
            staging / "summary.json",
            {
                "model": family,
                "explainer": explanation.kind,
                "output_space": explanation.output_space,
                "rows_explained": len(explanation.values),
                "background_rows": len(background),
                "base_value": explanation.base_value,
                "top_columns": [
                    {"column": r.name, "mean_abs_shap": float(r.mean_abs_shap), "rank": int(r.rank)}
                    for r in top.itertuples()
                ],
                "permutation_top": permutation.head(5).to_dict(orient="records"),
                "disagreements": notes,
                "plots": plots,
            },
        )
    stage_logger().info(
        "explained %s (%s SHAP, %d rows): top %s; %d disagreement(s) with permutation importance",
        family,
        explanation.kind,
        len(explanation.values),
        list(top["name"][:3]),
        len(notes),
    )
    return {"stage": "explain", "model": family, "top_columns": list(top["name"][:3]), "disagreements": len(notes)}
