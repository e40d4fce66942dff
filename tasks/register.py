"""register: log the pipeline run to MLflow, register the selected model, and move `champion` only if it wins."""

from __future__ import annotations

import warnings

from optiflow.config import Config
from optiflow.evaluation import classification_metrics
from optiflow.io import read_json, read_parquet, sha256_file, write_json
from optiflow.models import TRUSTED_TYPES, load_candidate
from optiflow.registry import (
    AliasDecision,
    Registration,
    champion_version,
    connect,
    decide_alias,
    git_state,
    log_model_version,
    score_version,
    set_alias,
)
from optiflow.split import labels
from tasks.common import StageResult, publish_markdown, stage_logger, stage_task


@stage_task("register")
def register(config: Config) -> StageResult:
    import mlflow
    from prefect.runtime import flow_run

    params, log = config.params, stage_logger()
    uri = connect(config)
    metrics = read_json(config.path("metrics"))
    model, meta = load_candidate(config.path("candidates") / metrics["selected"])
    test = read_parquet(config.path("test"))
    y_true, primary = labels(test, params.data), params.evaluate.primary_metric

    def score(candidate) -> float:
        return classification_metrics(y_true, candidate.predict_proba(test)[:, 1], params.evaluate.threshold)[primary]

    name, alias = params.registry.model_name, params.registry.champion_alias
    current = champion_version(name, alias)
    lineage = {
        "data.source": params.data.source,
        "data.sha256": sha256_file(config.source),
        "data.rows": str(read_json(config.path("validation") / "report.json")["rows"]),
        "params.sha256": params.subset_hash(tuple(params.model_dump(by_alias=True))),
        "prefect.flow_run_id": str(flow_run.id or "none (run by DVC or the CLI)"),
        "model.family": meta["family"],
        **git_state(config.root),
    }
    with mlflow.start_run(run_name=f"training-{meta['family']}") as run:
        mlflow.set_tags(lineage)
        mlflow.log_params(_flatten(params.model_dump(mode="json", by_alias=True, exclude={"paths"})))
        mlflow.log_metrics({f"test_{key}": value for key, value in metrics["test"].items()})
        for family, values in metrics["candidates"].items():
            mlflow.log_metrics({f"{family}.test_{key}": value for key, value in values.items()})
        mlflow.log_artifact(str(config.path("metrics")))
        mlflow.log_artifacts(str(config.path("plots")), artifact_path="plots")
        mlflow.log_artifacts(str(config.path("validation")), artifact_path="validation")
        features = test.drop(columns=[params.data.target])
        with warnings.catch_warnings():
            # the local file URI matches two equivalent MLflow source types, and the schema hint is about serving
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
            dataset = mlflow.data.from_pandas(
                test, source=config.path("test").as_uri(), targets=params.data.target, name="test"
            )
        mlflow.log_input(dataset, context="testing")
        version = log_model_version(model, model_name=name, input_example=features.head(5), trusted_types=TRUSTED_TYPES)
        decision = _decide(name, current, score(model), params.registry.min_delta, score)
        set_alias(name, alias, version, decision)
        from mlflow import MlflowClient

        for key, value in lineage.items():
            MlflowClient().set_model_version_tag(name, version, key, value)
        registration = Registration(name, version, run.info.run_id, alias, decision, uri)
    write_json(config.path("registration"), registration.to_dict())
    verdict = (
        f"**v{version} promoted to `{alias}`**"
        if decision.promote
        else f"v{version} registered; `{alias}` stays on v{current}"
    )
    publish_markdown(
        "alias-decision",
        f"# {name}\n\n{verdict}\n\nReason: {decision.reason}\n\nTracking: `{uri}`",
        "Champion alias decision",
    )
    log.info(
        "registered %s v%s; %s: %s", name, version, "promoted" if decision.promote else "not promoted", decision.reason
    )
    return {"stage": "register", **registration.to_dict()}


def _decide(name: str, current: str | None, challenger: float, min_delta: float, score) -> AliasDecision:
    if current is None:
        return decide_alias(challenger, None, min_delta, None)
    try:
        champion = score_version(name, current, score)
    except Exception as exc:  # a champion trained on another schema cannot score these rows
        return AliasDecision(
            False,
            f"champion v{current} cannot score the current test split ({exc}); alias left as is",
            challenger,
            current,
        )
    return decide_alias(challenger, champion, min_delta, current)


def _flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat
