"""Promotion of the selected candidate: the evidence gathered on it, the gate decision, and its registration.

Gates: minimum quality, the fairness gates of reports/fairness.json, latency and size budgets, robustness to
bounded input perturbations (optiflow.assess.robustness), and the champion re-scored on the same test rows. The
champion read, comparison and alias move happen under one file lock, and the aliases are the last thing written:
any earlier failure leaves them as they were.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from optiflow.assess.calibration import decision_threshold
from optiflow.assess.gates import GateReport, GateResult, evaluate_gates
from optiflow.assess.metrics import classification_metrics
from optiflow.assess.robustness import RobustnessReport, evaluate_robustness
from optiflow.config import REPORT_KEYS, Config, DataParams, EvaluateParams, GateParams, Params
from optiflow.data.schema import resolve_schema
from optiflow.data.split import labels
from optiflow.io import md5_file, project_relative_uri, sha256_file, sha256_tree
from optiflow.modeling.candidates import candidate_bytes, load_candidate
from optiflow.release.registry import (
    CARD_ARTIFACT,
    PromotionDecision,
    Registration,
    apply_decision,
    champion_version,
    connect,
    find_version,
    git_state,
    log_model_version,
    registry_lock,
    score_version,
    version_description,
)
from optiflow.release.report import RunFacts, card_html, gate_verdict, model_card, run_report
from optiflow.release.serving_spec import ServingSpec
from optiflow.release.tracking import log_training_run
from optiflow.timing import latency_ms_per_1k_rows


@dataclass(frozen=True, eq=False)
class PromotionInputs:
    """What the earlier stages wrote that a registration reads: the selected candidate, its reports, the splits."""

    candidate: Path  # the selected candidate's folder
    metrics: Mapping[str, Any]  # reports/metrics.json
    fairness: Mapping[str, Any]  # reports/fairness.json
    validation: Mapping[str, Any]  # reports/validation/report.json
    explain: Mapping[str, Any]  # reports/explain/summary.json
    compression: Mapping[str, Any]  # reports/compression.json
    slices: pd.DataFrame  # reports/evaluation/slices.csv
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame


@dataclass(frozen=True)
class Evidence:
    """What the gates judge besides the test metrics, measured on the candidate itself."""

    latency_ms_per_1k_rows: float
    model_bytes: int
    robustness: RobustnessReport

    def metrics(self) -> dict[str, float]:
        """Under the names the MLflow run and the headline use."""
        return {
            "model/latency_ms_per_1k_rows": self.latency_ms_per_1k_rows,
            "model/bytes": self.model_bytes,
            **{f"robustness/{key}": value for key, value in self.robustness.to_dict().items()},
        }


@dataclass(frozen=True)
class ChampionScore:
    """The champion re-scored on today's rows. metrics None: no champion; empty: it could not score them."""

    version: str | None
    metrics: dict[str, float] | None
    failures: tuple[GateResult, ...] = ()


@dataclass(frozen=True)
class Promotion:
    registration: Registration
    run_report: str | None  # the HTML page, as logged with the run; None when an identical version was found
    headline: dict[str, float]  # the registered version's headline figures (headline_metrics)


HEADLINE_GROUPS = ("test/", "gates/", "model/")  # the MLflow metric groups the headline is made of
# the most read first: DVC shows the headline's columns in its order and folds those that do not fit on the right
HEADLINE_FIRST = (
    *("test/roc_auc", "test/pr_auc", "test/f1", "gates/promoted", "gates/passed", "gates/failed"),
    *("model/latency_ms_per_1k_rows", "model/bytes", "test/accuracy", "test/ece"),
)


def headline_metrics(
    test: Mapping[str, float], evidence: Evidence, gates: GateReport, promoted: bool
) -> dict[str, float]:
    """The few figures a person compares between runs (`dvc metrics show`, `dvc exp show`, the MLflow run): the
    selected model's test metrics, how its gates went, its latency and size. The full tables stay in the reports."""
    return in_headline_order(
        {
            **{f"test/{key}": value for key, value in test.items()},
            "gates/passed": sum(result.passed and result.evaluated for result in gates.results),
            "gates/failed": len(gates.failures),
            "gates/not_evaluated": len(gates.not_evaluated),
            "gates/promoted": int(promoted),
            **{key: value for key, value in evidence.metrics().items() if key.startswith(HEADLINE_GROUPS)},
        }
    )


def in_headline_order(figures: Mapping[str, float]) -> dict[str, float]:
    """``figures`` of the headline groups, HEADLINE_FIRST first, then the rest by name."""
    rank = {key: position for position, key in enumerate(HEADLINE_FIRST)}
    kept = [key for key in figures if key.startswith(HEADLINE_GROUPS)]
    return {key: figures[key] for key in sorted(kept, key=lambda key: (rank.get(key, len(rank)), key))}


def gather_evidence(
    model: Any, candidate: Path, features: pd.DataFrame, y: Any, threshold: float, params: Params
) -> Evidence:
    """Latency per 1,000 test rows, the saved candidate's size, and robustness at the decision threshold."""
    latency = latency_ms_per_1k_rows(model, features)
    robustness = evaluate_robustness(model, features, y, threshold, params.robustness, params.seed)
    return Evidence(latency, candidate_bytes(candidate), robustness)


def rescorer(
    valid: pd.DataFrame, test: pd.DataFrame, data: DataParams, evaluate: EvaluateParams
) -> Callable[[Any], dict[str, float]]:
    """Test metrics of any model at its own threshold, chosen on today's validation split by today's policy: the
    challenger's figures and the champion's come from the same rows."""
    y_valid, y_test = labels(valid, data), labels(test, data)

    def score(model: Any) -> dict[str, float]:
        threshold = decision_threshold(y_valid, model.predict_proba(valid)[:, 1], evaluate)
        return classification_metrics(y_test, model.predict_proba(test)[:, 1], threshold)

    return score


def score_champion(version: str | None, rescore: Callable[[str], dict[str, float]]) -> ChampionScore:
    """The champion's metrics on today's rows; a champion that cannot score them is a failed gate, never a pass."""
    if version is None:
        return ChampionScore(None, None)
    try:
        return ChampionScore(version, rescore(version))
    except Exception as exc:  # a champion trained on another schema cannot score these rows
        detail = f"champion v{version} cannot score the current test split: {exc}"
        return ChampionScore(version, {}, (GateResult("champion", "rescore", None, None, ">=", False, detail),))


def decide(
    test_metrics: Mapping[str, float],
    fairness: Mapping[str, Any],
    evidence: Evidence,
    champion: ChampionScore,
    gates: GateParams,
    primary_metric: str,
) -> GateReport:
    """Every gate on the challenger: its test metrics, the fairness stage's gates, its evidence, the champion."""
    return evaluate_gates(
        test_metrics,
        gates,
        primary_metric,
        fairness=[*(GateResult(**result) for result in fairness["gates"]), *champion.failures],
        latency_ms_per_1k_rows=evidence.latency_ms_per_1k_rows,
        model_bytes=evidence.model_bytes,
        champion_metrics=champion.metrics,
        flip_rate=evidence.robustness.flip_rate_search,
        auc_drop=evidence.robustness.auc_drop_search,
        perturbed=evidence.robustness.perturbed,
    )


def lineage(
    config: Config, validation: Mapping[str, Any], family: str, threshold: float, flow_run_id: str
) -> dict[str, str]:
    """The tags tying a version to its data, splits, validation, params, code, orchestrator run and reports."""
    params = config.params
    return {
        "data.source": params.data.source,
        "data.sha256": sha256_file(config.source),
        "data.rows": str(validation["rows"]),
        **{f"data.{split}.md5": md5_file(config.path(split)) for split in ("train", "valid", "test")},
        "validation.success": str(validation["success"]).lower(),
        "validation.expectations": str(validation["evaluated"]),
        "params.sha256": params.subset_hash(tuple(params.model_dump(by_alias=True))),
        "prefect.flow_run_id": flow_run_id,
        "model.family": family,
        "model.threshold": f"{threshold:.6g}",
        **{f"artifacts.{key}": str(getattr(params.paths, key)) for key in REPORT_KEYS},
        **git_state(config.root),
    }


FINGERPRINT_TAG = "optiflow.fingerprint"


def fingerprint(config: Config, candidate: Path) -> str:
    """What makes two registrations the same: the selected candidate's files, the data, its splits and every
    setting. A second run that reproduces a registered version (e.g. `make run` after a monitoring retrain put the
    original outputs back) finds it by this and registers nothing."""
    parts = [
        sha256_tree(candidate),
        sha256_file(config.source),
        *(md5_file(config.path(split)) for split in ("train", "valid", "test")),
        config.params.subset_hash(tuple(config.params.model_dump(by_alias=True))),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def identical(config: Config, candidate: Path, uri: str) -> Promotion | None:
    """The registration of a version identical to this run's (same fingerprint), or None; nothing is registered
    and no alias moves when one exists."""
    from mlflow import MlflowClient

    name, alias = config.params.registry.model_name, config.params.registry.champion_alias
    found = find_version(name, FINGERPRINT_TAG, fingerprint(config, candidate))
    if found is None:
        return None
    champion = champion_version(name, alias)
    reason = (
        f"identical to registered v{found.version} (same model files, data, splits and settings): nothing new was "
        f"registered and the aliases did not move"
    )
    gates = {"passed": found.tags.get("optiflow.promotion") == "promoted", "message": reason, "results": []}
    decision = PromotionDecision(False, reason, gates, champion_version=champion)
    headline = in_headline_order(MlflowClient().get_run(found.run_id).data.metrics)
    return Promotion(Registration(name, str(found.version), found.run_id, alias, decision, uri, ""), None, headline)


def register_candidate(config: Config, inputs: PromotionInputs, flow_run_id: str) -> Promotion:
    """Log the pipeline run, register the candidate as a new version, and promote it only past every gate.

    The champion is read, re-scored, compared and (on promotion) replaced under `registry_lock`; the aliases are
    the last thing written. A run identical to a registered version registers nothing (``identical``).
    """
    import mlflow
    from mlflow import MlflowClient

    params, metrics = config.params, inputs.metrics
    uri = project_relative_uri(connect(config, writing=True), config.root)  # as registration.json records it
    duplicate = identical(config, inputs.candidate, uri)
    if duplicate is not None:
        return duplicate
    model, meta = load_candidate(inputs.candidate)
    y_test = labels(inputs.test, params.data)
    features = inputs.test.drop(columns=[params.data.target])
    evidence = gather_evidence(model, inputs.candidate, features, y_test, metrics["threshold"], params)
    name, alias = params.registry.model_name, params.registry.champion_alias
    tags = {
        **lineage(config, inputs.validation, meta["family"], metrics["threshold"], flow_run_id),
        FINGERPRINT_TAG: fingerprint(config, inputs.candidate),
    }
    rescore = rescorer(inputs.valid, inputs.test, params.data, params.evaluate)
    client = MlflowClient()
    with mlflow.start_run(run_name=f"training-{meta['family']}") as run:
        log_training_run(config, tags, metrics, evidence.metrics(), inputs.test)
        schema = resolve_schema(inputs.train, params.data)
        spec = ServingSpec.from_frame(
            inputs.train, schema.features, metrics["threshold"], params.data, params.validation
        )
        version = log_model_version(
            inputs.candidate,
            model,
            model_name=name,
            input_example=features.head(5),
            spec=spec,
            parity_rows=inputs.valid,  # the ONNX export is checked on the validation split (optiflow.release.onnx)
        )
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
        with registry_lock(config.root):
            champion = score_champion(champion_version(name, alias), lambda v: score_version(name, v, rescore))
            report = decide(
                metrics["test"], inputs.fairness, evidence, champion, params.gates, params.evaluate.primary_metric
            )
            facts = RunFacts(
                model_name=name,
                version=version,
                run_id=run.info.run_id,
                target=params.data.target,
                validation=inputs.validation,
                metrics=metrics,
                slices=inputs.slices,
                fairness=inputs.fairness,
                explain=inputs.explain,
                compression=inputs.compression,
                gates=report.to_dict(),
                champion_version=champion.version,
                lineage=tags,
                images=report_figures(config),
            )
            card = model_card(facts)
            client.update_model_version(name, version, description=version_description(card))
            mlflow.log_text(card_html(card, f"{name} v{version}"), CARD_ARTIFACT)
            page = run_report(facts)
            mlflow.log_text(page, config.path("run_report").name)
            decision = apply_decision(name, version, alias, params.registry.previous_alias, report, champion.version)
        headline = headline_metrics(metrics["test"], evidence, report, decision.promote)
        mlflow.log_metrics({key: value for key, value in headline.items() if key.startswith("gates/")})
    run_report_path = str(config.path("run_report").relative_to(config.root))
    registration = Registration(name, version, run.info.run_id, alias, decision, uri, run_report_path)
    return Promotion(registration, page, headline)


def report_figures(config: Config) -> dict[str, dict[str, Path]]:
    """The PNGs the run report inlines, by section and caption."""
    explain = config.path("explain")
    return {
        "Metrics": {name: config.path("plots") / f"{name}.png" for name in ("roc", "pr", "confusion")},
        "Calibration": {"reliability": config.path("evaluation") / "reliability.png"},
        "Explainability": {path.stem: path for path in sorted(explain.glob("*.png"))},
        "Compression": {
            name: config.path("compression_plots") / f"{name}.png" for name in ("size_vs_auc", "latency_vs_auc")
        },
    }


def decision_markdown(registration: Registration, run_report: Path) -> str:
    """The promotion decision for people: the verdict, every gate observed vs threshold, where to read more."""
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
        passed = gate_verdict(result)
        rows.append(f"| {result['gate']} | {result['metric']} | {observed} | {threshold} | {passed} |")
    return (
        f"# {registration.model_name}\n\n{verdict}\n\n```\n{decision.reason}\n```\n\n" + "\n".join(rows) + "\n\n"
        f"Run report: `{run_report}`\n\nTracking: `{registration.tracking_uri}`"
    )
