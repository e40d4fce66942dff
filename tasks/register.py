"""register: log the pipeline run to MLflow, register the selected model, and promote it only past every gate.

Gates: minimum quality, the fairness gates of reports/fairness.json, latency and size budgets, robustness to
bounded input perturbations (optiflow.assess.robustness), and the champion re-scored on the same test rows. The champion
read, comparison and alias move happen under one file lock, and the aliases are the last thing written: any earlier
failure leaves them as they were.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pandas as pd

from optiflow.assess.calibration import decision_threshold
from optiflow.assess.gates import GateResult, evaluate_gates
from optiflow.assess.metrics import classification_metrics
from optiflow.assess.robustness import evaluate_robustness
from optiflow.config import Config
from optiflow.data.schema import resolve_schema
from optiflow.data.split import labels
from optiflow.io import md5_file, read_json, read_parquet, sha256_file, write_json, write_text
from optiflow.modeling.candidates import candidate_bytes, load_candidate
from optiflow.release.registry import (
    CARD_ARTIFACT,
    REFERENCE_ARTIFACT,
    Registration,
    apply_decision,
    champion_version,
    connect,
    git_state,
    log_model_version,
    registry_lock,
    score_version,
    version_description,
)
from optiflow.release.report import RunFacts, card_html, model_card, run_report
from optiflow.release.serving_spec import ServingSpec
from optiflow.timing import latency_ms_per_1k_rows
from tasks.common import StageResult, candidates, publish_markdown, stage_logger, stage_task

# Reports a registered version points to (tags artifacts.<key>), relative to the project root.
REPORT_KEYS = (
    "validation",
    "compression",
    "compression_plots",
    "metrics",
    "plots",
    "evaluation",
    "fairness",
    "fairness_table",
    "explain",
    "run_report",
)


@stage_task("register")
def register(config: Config) -> StageResult:
    import mlflow
    from mlflow import MlflowClient
    from prefect.runtime import flow_run

    params, log = config.params, stage_logger()
    uri = connect(config)
    metrics = read_json(config.path("metrics"))
    fairness = read_json(config.path("fairness"))
    validation = read_json(config.path("validation") / "report.json")
    folder = candidates(config)[metrics["selected"]]
    model, meta = load_candidate(folder)
    valid, test = read_parquet(config.path("valid")), read_parquet(config.path("test"))
    y_valid, y_test = labels(valid, params.data), labels(test, params.data)

    def score(candidate: Any) -> dict[str, float]:
        """Test metrics at the candidate's own threshold, chosen on today's validation split by today's policy."""
        threshold = decision_threshold(y_valid, candidate.predict_proba(valid)[:, 1], params.evaluate)
        return classification_metrics(y_test, candidate.predict_proba(test)[:, 1], threshold)

    features = test.drop(columns=[params.data.target])
    latency = latency_ms_per_1k_rows(model, features)
    robustness = evaluate_robustness(model, features, y_test, metrics["threshold"], params.robustness, params.seed)
    model_bytes = candidate_bytes(folder)
    name, alias = params.registry.model_name, params.registry.champion_alias
    lineage = {
        "data.source": params.data.source,
        "data.sha256": sha256_file(config.source),
        "data.rows": str(validation["rows"]),
        **{f"data.{split}.md5": md5_file(config.path(split)) for split in ("train", "valid", "test")},
        "validation.success": str(validation["success"]).lower(),
        "validation.expectations": str(validation["evaluated"]),
        "params.sha256": params.subset_hash(tuple(params.model_dump(by_alias=True))),
        "prefect.flow_run_id": str(flow_run.id or "none (run by DVC or the CLI)"),
        "model.family": meta["family"],
        "model.threshold": f"{metrics['threshold']:.6g}",
        **{f"artifacts.{key}": str(getattr(params.paths, key)) for key in REPORT_KEYS},
        **git_state(config.root),
    }
    client = MlflowClient()
    with mlflow.start_run(run_name=f"training-{meta['family']}") as run:
        mlflow.set_tags(lineage)
        mlflow.log_params(_flatten(params.model_dump(mode="json", by_alias=True, exclude={"paths"})))
        mlflow.log_metrics({f"test_{key}": value for key, value in metrics["test"].items()})
        mlflow.log_metrics({"latency_ms_per_1k_rows": latency, "model_bytes": model_bytes})
        mlflow.log_metrics({f"robustness.{key}": value for key, value in robustness.to_dict().items()})
        for family, values in metrics["candidates"].items():
            mlflow.log_metrics({f"{family}.test_{key}": value for key, value in values.items()})
        for key in ("metrics", "fairness", "fairness_table", "compression"):
            mlflow.log_artifact(str(config.path(key)))
        # the sample monitoring compares batches with, kept with the model it belongs to
        mlflow.log_artifact(str(config.path("reference")), artifact_path=REFERENCE_ARTIFACT)
        for key in ("plots", "validation", "evaluation", "explain", "compression_plots"):
            mlflow.log_artifacts(str(config.path(key)), artifact_path=key)
        _log_test_dataset(config, test)
        train = read_parquet(config.path("train"))
        spec = ServingSpec.from_frame(train, resolve_schema(train, params.data).features, metrics["threshold"])
        version = log_model_version(folder, model, model_name=name, input_example=features.head(5), spec=spec)
        for key, value in lineage.items():
            client.set_model_version_tag(name, version, key, value)
        with registry_lock(config.root):
            current = champion_version(name, alias)
            champion_metrics, unscored = _champion_metrics(name, current, score)
            report = evaluate_gates(
                metrics["test"],
                params.gates,
                params.evaluate.primary_metric,
                fairness=[*(GateResult(**result) for result in fairness["gates"]), *unscored],
                latency_ms_per_1k_rows=latency,
                model_bytes=model_bytes,
                champion_metrics=champion_metrics,
                flip_rate=robustness.flip_rate_search,
                auc_drop=robustness.auc_drop_search,
            )
            facts = RunFacts(
                model_name=name,
                version=version,
                run_id=run.info.run_id,
                target=params.data.target,
                validation=validation,
                metrics=metrics,
                slices=pd.read_csv(config.path("evaluation") / "slices.csv"),
                fairness=fairness,
                explain=read_json(config.path("explain") / "summary.json"),
                compression=read_json(config.path("compression")),
                gates=report.to_dict(),
                champion_version=current,
                lineage=lineage,
                images=_figures(config),
            )
            card = model_card(facts)
            client.update_model_version(name, version, description=version_description(card))
            mlflow.log_text(card_html(card, f"{name} v{version}"), CARD_ARTIFACT)
            write_text(config.path("run_report"), run_report(facts))
            mlflow.log_artifact(str(config.path("run_report")))
            decision = apply_decision(name, version, alias, params.registry.previous_alias, report, current)
    registration = Registration(
        name, version, run.info.run_id, alias, decision, uri, str(config.path("run_report").relative_to(config.root))
    )
    write_json(config.path("registration"), registration.to_dict())
    publish_markdown("alias-decision", _decision_markdown(registration, config), "Promotion decision and gates")
    log.info("registered %s v%s: %s\n%s", name, version, decision.outcome, decision.reason)
    return {"stage": "register", **registration.to_dict()}


def _champion_metrics(
    name: str, current: str | None, score: Callable[[Any], dict[str, float]]
) -> tuple[dict[str, float] | None, list[GateResult]]:
    """The champion's metrics on today's rows; a champion that cannot score them is a failed gate, never a pass."""
    if current is None:
        return None, []
    try:
        return score_version(name, current, score), []
    except Exception as exc:  # a champion trained on another schema cannot score these rows
        detail = f"champion v{current} cannot score the current test split: {exc}"
        return {}, [GateResult("champion", "rescore", None, None, ">=", False, detail)]


def _figures(config: Config) -> dict[str, dict[str, Any]]:
    explain = config.path("explain")
    return {
        "Metrics": {name: config.path("plots") / f"{name}.png" for name in ("roc", "pr", "confusion")},
        "Calibration": {"reliability": config.path("evaluation") / "reliability.png"},
        "Explainability": {path.stem: path for path in sorted(explain.glob("*.png"))},
        "Compression": {
            name: config.path("compression_plots") / f"{name}.png" for name in ("size_vs_auc", "latency_vs_auc")
        },
    }


def _decision_markdown(registration: Registration, config: Config) -> str:
    decision = registration.decision
    verdict = (
        f"**v{registration.version} promoted to `{registration.alias}`**"
        + (f"; v{decision.previous_version} is now `previous`" if decision.previous_version else "")
        if decision.promote
        else f"v{registration.version} registered but **rejected**; `{registration.alias}` stays on "
        + (f"v{decision.champion_version}" if decision.champion_version else "no version")
    )
    rows = ["| gate | metric | observed | threshold | passed |", "|---|---|---|---|---|"]
    for result in decision.gates["results"]:
        observed = "n/a" if result["observed"] is None else f"{result['observed']:.6g}"
        threshold = "-" if result["threshold"] is None else f"{result['comparison']} {result['threshold']:.6g}"
        passed = "yes" if result["passed"] else "NO"
        rows.append(f"| {result['gate']} | {result['metric']} | {observed} | {threshold} | {passed} |")
    return (
        f"# {registration.model_name}\n\n{verdict}\n\n```\n{decision.reason}\n```\n\n" + "\n".join(rows) + "\n\n"
        f"Run report: `{config.path('run_report')}`\n\nTracking: `{registration.tracking_uri}`"
    )


def _log_test_dataset(config: Config, test: pd.DataFrame) -> None:
    import mlflow

    with warnings.catch_warnings():
        # the local file URI matches two equivalent MLflow source types, and the schema hint is about serving
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
        dataset = mlflow.data.from_pandas(
            test, source=config.path("test").as_uri(), targets=config.params.data.target, name="test"
        )
    mlflow.log_input(dataset, context="testing")


def _flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat
