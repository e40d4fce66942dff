"""The training flow end to end on a sample: registry, gates, champion alias, rollback, lineage, the run report,
Prefect cache, and bad input."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from flows.cli import main
from flows.training import training
from optiflow.config import load_config
from optiflow.modeling.candidates import load_candidate
from optiflow.release.registry import CARD_ARTIFACT, DESCRIPTION_LIMIT, connect
from tasks.fairness import fairness
from tests.conftest import copy_trained

pytestmark = pytest.mark.usefixtures("prefect_api")  # flows run on one temporary Prefect API

STAGES = ["ingest", "split", "tune", "train", "compress", "evaluate", "fairness", "explain", "register"]


def _states(results: list[dict]) -> dict[str, str]:
    return {r["stage"]: r["state"] for r in results}


def _registry(params_path: Path) -> tuple[list[str], str | None]:
    config = load_config(params_path)
    connect(config)
    client = MlflowClient()
    name = config.params.registry.model_name
    versions = sorted(v.version for v in client.search_model_versions(f"name='{name}'"))
    champion = client.get_registered_model(name).aliases.get("champion") if versions else None
    return [str(v) for v in versions], str(champion) if champion is not None else None


def _aliases(params_path: Path) -> dict[str, str]:
    connect(load_config(params_path))
    return {k: str(v) for k, v in MlflowClient().get_registered_model("optiflow-churn").aliases.items()}


def test_flow_registers_a_champion_then_reuses_cached_stages(flow_training, trained_copy: Path) -> None:
    first = flow_training[1]  # the session's one cold run of the flow; what follows runs on a copy of its project
    project = trained_copy
    assert [r["stage"] for r in first] == STAGES
    assert set(_states(first).values()) == {"Completed"}
    registered = first[-1]
    assert registered["version"] == "1" and registered["decision"]["promote"]
    assert _registry(project) == (["1"], "1")

    assert registered["decision"]["gates"]["passed"] and registered["decision"]["outcome"] == "promoted"

    root = project.parent
    version = MlflowClient().get_model_version("optiflow-churn", "1")
    tags = version.tags
    assert tags["data.sha256"] == hashlib.sha256((root / "data/input.csv").read_bytes()).hexdigest()
    assert tags["data.rows"] == "1500" and "git.commit" in tags and "git.dirty" in tags
    for split in ("train", "valid", "test", "holdout"):
        assert (
            tags[f"data.{split}.md5"]
            == hashlib.md5((root / f"data/processed/{split}.parquet").read_bytes()).hexdigest()
        )
    assert tags["validation.success"] == "true"
    assert tags["validation.expectations"] == str(
        json.loads((root / "reports/validation/report.json").read_text())["evaluated"]
    )
    assert tags["prefect.flow_run_id"] != "none (run by DVC or the CLI)" and len(tags["params.sha256"]) == 64
    assert (
        tags["artifacts.run_report"] == "reports/run_report.html"
        and tags["artifacts.fairness"] == "reports/fairness.json"
    )
    assert tags["optiflow.promotion"] == "promoted"
    # no champion gate on a first release; the senior citizens of the test split are too few to judge
    assert tags["optiflow.gates"].startswith("8 gates passed, 1 not evaluated (allowed)")
    assert tags["optiflow.comparison"] == "first release: no version held the alias 'champion'"
    assert tags["model.calibration"] in ("sigmoid", "isotonic") and tags["train.device"] == "cpu"
    card = mlflow.artifacts.load_text(f"runs:/{version.run_id}/{CARD_ARTIFACT}")
    for heading in (
        "## Intended use",
        "## Data",
        "## Metrics",
        "## Slices",
        "## Fairness",
        "## Top features",
        "## Compression",
        "## Limitations",
        "## Gate decisions",
    ):
        assert f"<h2>{heading.removeprefix('## ')}" in card  # the full card; the description keeps what fits
    assert len(version.description) <= DESCRIPTION_LIMIT and "## Gate decisions" in version.description
    run = MlflowClient().get_run(version.run_id)
    assert run.data.metrics["test/roc_auc"] == pytest.approx(first[STAGES.index("evaluate")]["test"]["roc_auc"])
    assert run.data.params["evaluate.threshold_policy"] == "max_f1"
    logged = {a.path for a in MlflowClient().list_artifacts(version.run_id)}
    assert {"model_card.html", "run_report.html", "fairness.json", "explain", "evaluation"} <= logged

    metrics = json.loads((root / "reports/test_metrics.json").read_text())
    assert {"primary_metric", "selected", "test", "candidates", "threshold", "calibration"} <= set(metrics)
    assert {row["data"] for name, row in metrics["decisions"].items() if name != "test metrics"} == {"valid"}
    assert metrics["selected_on"] == "valid" and metrics["calibration"]["fitted_on"] == "valid"
    selected = json.loads((root / "models/selected/meta.json").read_text())
    assert selected["candidate"] == metrics["selected"] and list(selected["files"]) == ["model.skops"]
    headline = json.loads((root / "reports/metrics.json").read_text())
    assert headline["test/roc_auc"] == metrics["test"]["roc_auc"] and headline["gates/promoted"] == 1
    assert {key for key in headline if key in run.data.metrics} == set(headline)  # the run's names, no others
    registration = (root / "reports/registration.json").read_text()
    assert str(root.resolve()) not in registration and '"tracking_uri": "sqlite:///mlflow.db"' in registration
    compression = json.loads((root / "reports/compression.json").read_text())
    assert {"fp32", "int8", "magnitude80", "structured50", "distilled"} <= set(compression["variants"])
    assert compression["message"] and set(compression["judgements"]) == set(compression["variants"]) - {"fp32"}
    chosen = [f"mlp_{compression['chosen']}"] if compression["chosen"] else []
    assert set(metrics["candidates"]) == {"logistic_regression", "hist_gradient_boosting", "mlp", *chosen}
    assert (root / "reports/compression/size_vs_auc.png").stat().st_size > 1000
    for values in metrics["candidates"].values():
        assert 0 < values["threshold"] < 1 and 0 <= values["ece"] < 0.5
    slices = pd.read_csv(root / "reports/evaluation/slices.csv")
    assert {"female", "senior_citizen", "female & senior_citizen", "contract"} <= set(slices["slice"])
    assert (root / "reports/evaluation/reliability.png").stat().st_size > 1000
    explained = json.loads((root / "reports/explain/summary.json").read_text())
    assert explained["explainer"] == "tree" and len(explained["top_columns"]) >= 3
    assert (root / "reports/explain/shap_beeswarm.png").is_file()

    again = training(str(project))
    assert set(_states(again).values()) == {"Cached"}
    assert _registry(project) == (["1"], "1")


def test_deleted_outputs_are_rebuilt_and_unchanged_downstream_stays_cached(trained_copy: Path) -> None:
    project = trained_copy  # trained by the session's flow run: its stages are cache hits here
    training(str(project))

    shutil.rmtree(project.parent / "models" / "candidates")
    states = _states(training(str(project)))
    assert states["train"] == "Completed"
    assert states["evaluate"] == "Cached" and states["register"] == "Cached"  # byte-identical models


def test_outputs_another_run_wrote_are_rebuilt_not_taken_from_the_cache(trained_copy: Path) -> None:
    project = trained_copy  # trained by the session's flow run: its stages are cache hits here
    """A cached record describes outputs: when another run (other params, other data) has since replaced them on
    disk, the stage runs again instead of reporting the other run's files as its own."""
    summary = project.parent / "reports" / "explain" / "summary.json"
    training(str(project))
    own = summary.read_bytes()
    training(str(project), overrides={"explain.top_k": 1})
    assert summary.read_bytes() != own
    states = _states(training(str(project)))
    assert [states[s] for s in STAGES[:7]] == ["Cached"] * 7  # their outputs on disk are still this run's
    assert states["explain"] == "Completed" and summary.read_bytes() == own


def test_a_param_change_reruns_only_dependent_stages_and_equal_model_keeps_champion(trained_copy: Path) -> None:
    project = trained_copy  # trained by the session's flow run: its stages are cache hits here
    training(str(project))
    reports = project.parent / "reports"
    champion_page = (reports / "run_report.html").read_text()
    results = training(str(project), overrides={"evaluate.threshold": 0.4})
    states = _states(results)
    assert [states[s] for s in STAGES[:4]] == ["Cached"] * 4
    assert states["evaluate"] == "Completed" and states["register"] == "Completed"
    decision = results[-1]["decision"]
    assert not decision["promote"] and decision["champion_version"] == "1"
    # the same model again: a difference of exactly 0 is no evidence of improvement (superiority is on)
    assert "champion roc_auc_difference_lower_bound: observed 0 vs threshold > 0" in decision["reason"]
    assert "DeLong" in decision["reason"] and "holdout rows neither model trained on" in decision["reason"]
    assert _registry(project) == (["1", "2"], "1") and _aliases(project) == {"champion": "1"}
    assert MlflowClient().get_model_version("optiflow-churn", "2").tags["optiflow.promotion"] == "rejected"
    registration = json.loads((project.parent / "reports/registration.json").read_text())
    assert registration["decision"]["outcome"] == "rejected"
    assert registration["run_report"] == "reports/runs/v2/run_report.html" and (reports / "runs/v2").is_dir()
    assert (reports / "run_report.html").read_text() == champion_page  # a rejected run leaves the champion's page


def test_failing_gates_reject_promotion_moves_previous_and_rollback_restores(
    trained_copy: Path, capsys: pytest.CaptureFixture
) -> None:
    project = trained_copy  # trained by the session's flow run: its stages are cache hits here
    training(str(project))
    rejected = training(str(project), overrides={"gates.min_quality": {"roc_auc": 0.99}, "gates.max_model_bytes": 10})
    decision = rejected[-1]["decision"]
    assert not decision["promote"]
    assert "3 of" in decision["reason"] and "quality roc_auc: observed" in decision["reason"]
    assert "vs threshold >= 0.99" in decision["reason"] and "budget model_bytes" in decision["reason"]
    assert _aliases(project) == {"champion": "1"}

    promoted = training(str(project), overrides={"gates.champion.superiority": False})  # a tie is not inferior
    assert promoted[-1]["decision"]["promote"] and promoted[-1]["version"] == "3"
    assert _aliases(project) == {"champion": "3", "previous": "1"}

    assert main(["rollback", "--params", str(project), "--reason", "scores drifted"]) == 0
    assert _aliases(project) == {"champion": "1"}
    tags = MlflowClient().get_model_version("optiflow-churn", "1").tags
    assert tags["optiflow.rollback.restored_reason"] == "scores drifted"
    assert tags["optiflow.rollback.restored_by"] and tags["optiflow.rollback.restored_at"].endswith("+00:00")
    assert MlflowClient().get_model_version("optiflow-churn", "3").tags["optiflow.promotion"] == "rolled back"
    capsys.readouterr()
    assert main(["rollback", "--params", str(project)]) == 2
    assert "no version holds the alias 'previous'" in capsys.readouterr().err
    assert _aliases(project) == {"champion": "1"}
    assert main(["status", "--params", str(project)]) == 0
    status = capsys.readouterr().out  # piped (captured): plain ASCII borders, as wide as it needs
    assert "rolled back" in status and "rejected" in status and "\x1b[" not in status
    assert next(line for line in status.splitlines() if line.startswith("| 1 ")).split("|")[2].strip() == "champion"


def test_train_fits_the_tuned_hyperparameters(trained_copy: Path) -> None:
    project = trained_copy  # trained by the session's flow run: its stages are cache hits here
    training(str(project))
    root = project.parent
    for family in ("logistic_regression", "hist_gradient_boosting"):
        tuned = json.loads((root / "models/tuning" / f"{family}.json").read_text())["best_params"]
        fitted = json.loads((root / "models/candidates" / family / "meta.json").read_text())["hyperparameters"]
        assert tuned and all(fitted[key] == value for key, value in tuned.items()), family
        model_params = load_candidate(root / "models/candidates" / family)[0].named_steps["model"].get_params()
        assert all(model_params[key] == value for key, value in tuned.items()), family


def _snapshot(root: Path) -> dict[str, str]:
    """Every output file's hash (the validated dataset included), except inputs and the failure report."""
    skipped = ("data/input", "data/broken", "reports/validation-failures", "params")
    files = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_file() and not relative.startswith(skipped) and path.suffix != ".db":
            files[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


@pytest.fixture(scope="module")
def trained(trained_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's trained project shared by this module's tests, which each leave it unchanged."""
    return copy_trained(trained_project, tmp_path_factory.mktemp("trained") / "project")


def _broken(kind: str, sample: pd.DataFrame) -> tuple[str, pd.DataFrame | bytes | None]:
    frame = sample.assign(customer_id=range(len(sample)))
    return {
        "missing-file": ("data source not found", None),
        "empty-file": ("file is empty", b""),
        "missing-target": ("data.target: 'churn' is not a column", frame.drop(columns=["churn"])),
        "third-label": ("expect_column_distinct_values_to_equal_set", frame.assign(churn=["Yes", "No", "Maybe"] * 500)),
        "wrong-type": ("'monthly_charges' is declared numeric", frame.assign(monthly_charges="twenty")),
        "all-null": ("column 'tenure': expect_column_values_to_not_be_null", frame.assign(tenure=None)),
        "duplicate-ids": ("expect_column_values_to_be_unique", frame.assign(customer_id=1)),
        "too-few-rows": ("expect_table_row_count_to_be_between", frame.head(50)),
    }[kind]


@pytest.mark.parametrize(
    "kind",
    [
        "missing-file",
        "empty-file",
        "missing-target",
        "third-label",
        "wrong-type",
        "all-null",
        "duplicate-ids",
        "too-few-rows",
    ],
)
def test_bad_input_stops_with_a_clear_error_and_changes_nothing(
    kind: str, trained: Path, churn_sample: pd.DataFrame, capsys: pytest.CaptureFixture
) -> None:
    root = trained.parent
    message, content = _broken(kind, churn_sample)
    source = root / "data" / f"broken-{kind}.csv"
    if isinstance(content, pd.DataFrame):
        content.to_csv(source, index=False)
    elif content is not None:
        source.write_bytes(content)
    before, registry = _snapshot(root), _registry(trained)
    # the broken files carry an id column: named, as a table's id is, so the run reaches the check each one breaks
    overrides = ["-S", f"data.source=data/{source.name}", "-S", "data.id_columns=[customer_id]"]

    code = main(["train", "--params", str(trained), *overrides])

    error = capsys.readouterr().err
    assert code == 2
    assert message in error and source.name in error
    assert _registry(trained) == registry
    assert _snapshot(root) == before


def test_sensitive_feature_missing_from_the_data_is_a_clear_error(trained: Path, capsys: pytest.CaptureFixture) -> None:
    before, registry = _snapshot(trained.parent), _registry(trained)
    code = main(["train", "--params", str(trained), "-S", "data.sensitive_features=[female, ethnicity]"])
    assert code == 2
    assert "data.sensitive_features: 'ethnicity' is not a column" in capsys.readouterr().err
    assert _registry(trained) == registry and _snapshot(trained.parent) == before


def test_fairness_stage_fails_a_strict_gate_and_mitigation_narrows_the_gap(trained: Path) -> None:
    config = load_config(
        trained,
        {
            "fairness.max_demographic_parity_difference": 0.02,
            "fairness.max_equalized_odds_difference": None,
            "fairness.min_group_size": 20,
            "fairness.constraint": "demographic_parity",
            "paths.fairness": "reports/strict/fairness.json",
            "paths.fairness_table": "reports/strict/fairness.csv",
        },
    )
    result = fairness.fn(config)
    assert not result["passed"] and result["mitigated"]
    report = json.loads((trained.parent / "reports/strict/fairness.json").read_text())
    mitigation = report["mitigation"]
    assert mitigation["registered"] is False and "skops" in mitigation["note"]
    assert mitigation["fitted_on"] == "valid" and report["mitigation_decided_on"]["data"] == "valid"
    # the ThresholdOptimizer equalises the groups of the mitigated columns together: their (joint) gap narrows on test
    equalised = " & ".join(mitigation["columns"])
    gap = next(
        g for g in mitigation["gaps"] if g["feature"] == equalised and g["metric"].startswith("demographic_parity_d")
    )
    assert gap["mitigated"] < gap["baseline"], gap
    table = pd.read_csv(trained.parent / "reports/strict/fairness.csv")
    assert set(table["model"]) == {report["model"], mitigation["model"]}


def test_run_report_renders_in_headless_chromium(trained: Path, tmp_path: Path) -> None:
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        if os.environ.get("CI"):
            pytest.fail("/usr/bin/chromium is missing on CI: .ci/run installs it (apt-get install chromium)")
        pytest.skip("/usr/bin/chromium not installed (apt-get install chromium)")
    report = trained.parent / "reports/run_report.html"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    shot = tmp_path / "report.png"
    subprocess.run(
        [str(chromium), *flags, f"--screenshot={shot}", "--window-size=1280,2000", report.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.is_file() and shot.stat().st_size > 20_000  # a blank page is a few KB
    dom = subprocess.run(
        [str(chromium), *flags, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    for heading in ("Validation", "Metrics", "Calibration", "Slices", "Fairness", "Explainability", "Gate decisions"):
        assert f">{heading}</h2>" in dom, heading
    assert dom.count("data:image/png;base64,") >= 5 and "http://" not in dom and "https://" not in dom


def test_unknown_params_key_fails_before_anything_runs(trained: Path, capsys: pytest.CaptureFixture) -> None:
    raw = yaml.safe_load(trained.read_text())
    raw["split"]["tset_size"] = 0.3
    bad = trained.parent / "params-typo.yaml"
    bad.write_text(yaml.safe_dump(raw))
    before, registry = _snapshot(trained.parent), _registry(trained)
    assert main(["train", "--params", str(bad)]) == 2
    assert "split.tset_size: unknown key" in capsys.readouterr().err
    assert _registry(trained) == registry and _snapshot(trained.parent) == before
