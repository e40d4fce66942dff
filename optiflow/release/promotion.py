"""Promotion of the selected candidate: the evidence gathered on it, the gate decision, and its registration.

Gates: minimum quality and the fairness gates (on the test split, scored once), latency and size budgets,
robustness to bounded input perturbations (optiflow.assess.robustness), and the paired test against the champion:
both score the same holdout rows, none of which either trained on (the champion's own record of the keys it learnt
from is checked), and the confidence interval of their ROC AUC difference decides (optiflow.assess.paired).

Everything happens under one file lock, in this order: read the champion, log the run and the version, compare,
move the aliases. Any error reading the champion stops the release before anything is registered; no champion at
all is the first release, logged and recorded as such. The aliases are the last thing written.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from optiflow.assess.gates import ChampionEvidence, GateReport, GateResult, evaluate_gates
from optiflow.assess.metrics import classification_metrics
from optiflow.assess.paired import compare_auc
from optiflow.assess.robustness import RobustnessReport, evaluate_robustness
from optiflow.config import REPORT_KEYS, Config, GateParams, Params
from optiflow.data.keys import KEY_COLUMN
from optiflow.data.schema import resolve_schema
from optiflow.data.split import labels
from optiflow.errors import IntegrityError, OptiflowError, ServiceUnavailable
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
    load_registered,
    log_model_version,
    registry_lock,
    version_description,
)
from optiflow.release.report import RunFacts, card_html, gate_verdict, model_card, run_report
from optiflow.release.rollout import start_release
from optiflow.release.serving_spec import ServingSpec
from optiflow.release.tracking import log_seen_keys, log_training_run, seen_keys
from optiflow.timing import latency_ms_per_1k_rows

log = logging.getLogger(__name__)


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
    holdout: pd.DataFrame


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


@dataclass(frozen=True, eq=False)
class ChampionRead:
    """The champion as read under the registry lock: no version (the first release), or its model, the threshold
    it serves with and the key of every row it learnt from."""

    version: str | None
    model: Any = None
    threshold: float = 0.5
    seen: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class ChampionComparison:
    """The challenger against the champion on the holdout: the evidence the gates judge, or the failures that say
    why it could not be judged (which never pass). Both empty: there is no champion."""

    evidence: ChampionEvidence | None = None
    failures: tuple[GateResult, ...] = ()
    note: str = ""  # what a person reads about the comparison (also a version tag)


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


def read_champion(model_name: str, alias: str) -> ChampionRead:
    """The version holding ``alias``, loaded and verified, with the keys of the rows it learnt from. No version
    holding the alias is the first release; any error on the way stops the release with the reason."""
    from mlflow import MlflowClient

    try:
        aliases = MlflowClient().get_registered_model(model_name).aliases
    except Exception as exc:  # the registry answered wrongly or not at all: never promote blind
        from mlflow.exceptions import MlflowException

        if isinstance(exc, MlflowException) and exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            aliases = {}  # no registered model yet: nothing has ever been released
        else:
            raise ServiceUnavailable(
                f"{model_name}: cannot read the {alias!r} alias from the registry ({type(exc).__name__}: {exc}); "
                "the release stopped: nothing was registered and no alias moved"
            ) from None
    version = aliases.get(alias)
    if version is None:
        log.info("%s: no version holds %r: this is the first release (no champion to compare with)", model_name, alias)
        return ChampionRead(None)
    stopped = "the release stopped: nothing was registered and no alias moved"
    try:
        loaded = load_registered(model_name, version=str(version))
    except OptiflowError as exc:
        raise type(exc)(f"champion {model_name} v{version} could not be read, so {stopped}: {exc}") from None
    except Exception as exc:  # the artifact store or the registry failed mid-way
        raise ServiceUnavailable(
            f"champion {model_name} v{version} could not be read ({type(exc).__name__}: {exc}), so {stopped}"
        ) from None
    try:
        seen = seen_keys(loaded.run_id)
    except Exception as exc:
        raise IntegrityError(
            f"champion {model_name} v{version} has no record of the rows it learnt from (run {loaded.run_id}: "
            f"{type(exc).__name__}), so rows it never saw cannot be told apart and no fair comparison is possible; "
            f"{stopped}. If that version predates keyed rows, retire it by hand (e.g. MlflowClient()"
            f".delete_registered_model_alias({model_name!r}, {alias!r})) and train again"
        ) from None
    return ChampionRead(str(version), loaded.model, loaded.spec.threshold, seen)


def compare_with_champion(
    champion: ChampionRead,
    model: Any,
    threshold: float,
    holdout: pd.DataFrame,
    learnt_from: frozenset[str],
    params: Params,
) -> ChampionComparison:
    """Both models on the holdout rows the champion never learnt from (the challenger learnt from none of the
    holdout): the paired ROC AUC comparison, and their metrics at their own thresholds."""
    if champion.version is None:
        return ChampionComparison(note=f"first release: no version held the alias {params.registry.champion_alias!r}")
    overlap = learnt_from & set(holdout[KEY_COLUMN])
    if overlap:
        raise IntegrityError(f"{len(overlap)} holdout row(s) are also train or valid rows; the split is broken")
    rows = holdout[~holdout[KEY_COLUMN].isin(champion.seen)].reset_index(drop=True)
    y = labels(rows, params.data)
    dropped = len(holdout) - len(rows)
    if len(set(y)) < 2:
        detail = (
            f"not evaluated: {len(rows)} holdout rows champion v{champion.version} never learnt from "
            f"({dropped} it did were left out); a comparison needs both classes"
        )
        return ChampionComparison(failures=(_champion_failure("comparison", detail),), note=detail)
    try:
        champion_scores = champion.model.predict_proba(rows)[:, 1]
    except Exception as exc:  # a champion trained on another schema cannot score these rows
        detail = f"not evaluated: champion v{champion.version} cannot score the holdout: {exc}"
        return ChampionComparison(failures=(_champion_failure("comparison", detail),), note=detail)
    scores = model.predict_proba(rows)[:, 1]
    settings = params.gates.champion
    comparison = compare_auc(
        y, champion_scores, scores, settings.method, settings.confidence, settings.resamples, params.seed
    )
    evidence = ChampionEvidence(
        comparison,
        challenger=classification_metrics(y, scores, threshold),
        champion=classification_metrics(y, champion_scores, champion.threshold),
    )
    note = f"vs champion v{champion.version}: {comparison.describe()}"
    if dropped:
        note += f"; {dropped} holdout rows the champion learnt from were left out"
    log.info("%s", note)
    return ChampionComparison(evidence, note=note)


def _champion_failure(metric: str, detail: str) -> GateResult:
    return GateResult("champion", metric, None, None, ">=", False, detail)


def decide(
    test_metrics: Mapping[str, float],
    fairness: Mapping[str, Any],
    evidence: Evidence,
    champion: ChampionComparison,
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
        champion=champion.evidence,
        flip_rate=evidence.robustness.flip_rate_search,
        auc_drop=evidence.robustness.auc_drop_search,
        perturbed=evidence.robustness.perturbed,
    )


def lineage(
    config: Config, validation: Mapping[str, Any], meta: Mapping[str, Any], threshold: float, flow_run_id: str
) -> dict[str, str]:
    """The tags tying a version to its data, splits, validation, params, code, device, orchestrator run and reports."""
    params = config.params
    calibration = meta.get("calibration", {})
    return {
        "data.source": params.data.source,
        "data.sha256": sha256_file(config.source),
        "data.rows": str(validation["rows"]),
        **{f"data.{split}.md5": md5_file(config.path(split)) for split in ("train", "valid", "test", "holdout")},
        "validation.success": str(validation["success"]).lower(),
        "validation.expectations": str(validation["evaluated"]),
        "params.sha256": params.subset_hash(tuple(params.model_dump(by_alias=True))),
        "prefect.flow_run_id": flow_run_id,
        "model.family": meta["family"],
        "model.candidate": str(meta.get("candidate", meta["family"])),
        "model.calibration": str(calibration.get("method", "none")),
        "model.threshold": f"{threshold:.6g}",
        "train.device": str(meta.get("device", "not recorded")),
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
        *(md5_file(config.path(split)) for split in ("train", "valid", "test", "holdout")),
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
    """Read the champion, log the pipeline run, register the candidate as a new version, compare it with the
    champion and promote it only past every gate, all under `registry_lock`; the aliases are the last thing written.
    A run identical to a registered version registers nothing (``identical``).
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
    features = inputs.test.drop(columns=[params.data.target, KEY_COLUMN])
    evidence = gather_evidence(model, inputs.candidate, features, y_test, metrics["threshold"], params)
    name, alias = params.registry.model_name, params.registry.champion_alias
    tags = {
        **lineage(config, inputs.validation, meta, metrics["threshold"], flow_run_id),
        FINGERPRINT_TAG: fingerprint(config, inputs.candidate),
    }
    release = params.release
    hold = release.mode != "direct" or release.approval == "approve"  # a passing version waits in a release
    learnt_from = frozenset(pd.concat([inputs.train[KEY_COLUMN], inputs.valid[KEY_COLUMN]]))
    client = MlflowClient()
    with registry_lock(config.root):
        champion = read_champion(name, alias)  # raises before anything is registered
        with mlflow.start_run(run_name=f"training-{meta['family']}") as run:
            log_training_run(config, tags, metrics, evidence.metrics(), inputs.test)
            log_seen_keys(inputs.train, inputs.valid)
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
            compared = compare_with_champion(champion, model, metrics["threshold"], inputs.holdout, learnt_from, params)
            for key, value in {**tags, "optiflow.comparison": compared.note}.items():
                client.set_model_version_tag(name, version, key, value[:5000])
            if compared.evidence is not None:
                mlflow.log_metrics(comparison_metrics(compared.evidence))
            report = decide(
                metrics["test"], inputs.fairness, evidence, compared, params.gates, params.evaluate.primary_metric
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
                comparison=compared.note,
                held=hold and champion.version is not None,
            )
            card = model_card(facts)
            client.update_model_version(name, version, description=version_description(card))
            mlflow.log_text(card_html(card, f"{name} v{version}"), CARD_ARTIFACT)
            page = run_report(facts)
            mlflow.log_text(page, config.path("run_report").name)
            decision = apply_decision(
                name, version, alias, params.registry.previous_alias, report, champion.version, hold
            )
            if decision.staged:
                start_release(
                    name, alias, release.challenger_alias, version, release.mode, release.canary_share, time.time()
                )
            headline = headline_metrics(metrics["test"], evidence, report, decision.promote)
            mlflow.log_metrics({key: value for key, value in headline.items() if key.startswith("gates/")})
    run_report_path = str(config.path("run_report").relative_to(config.root))
    registration = Registration(name, version, run.info.run_id, alias, decision, uri, run_report_path)
    return Promotion(registration, page, headline)


def comparison_metrics(evidence: ChampionEvidence) -> dict[str, float]:
    """The paired comparison on the holdout as MLflow metrics of the challenger's run (grouped under champion/)."""
    comparison = evidence.comparison
    return {
        "champion/roc_auc_difference": comparison.estimate,
        "champion/roc_auc_difference_low": comparison.low,
        "champion/roc_auc_difference_high": comparison.high,
        "champion/p_better": comparison.p_better,
        "champion/rows": float(comparison.rows),
        "champion/roc_auc": comparison.baseline_auc,
        "champion/challenger_roc_auc": comparison.challenger_auc,
    }


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
        else f"v{registration.version} passed every gate and is the **challenger** of a release "
        f"(`optiflow release status`); `{registration.alias}` stays on v{decision.champion_version}"
        if decision.staged
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
