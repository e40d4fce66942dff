"""The monitoring flow on a small trained project: an undrifted batch retrains nothing, a drifted one retrains
through the training flow (every gate), a batch that fails validation stops with a clear error and no retrain."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from flows.cli import main
from flows.monitoring import monitoring
from flows.scoring import scoring
from flows.training import training
from optiflow.config import load_config
from optiflow.errors import ValidationFailed
from optiflow.monitoring.batches import read_history
from optiflow.release.registry import champion_version, connect
from tests.conftest import CLASSICAL_FAMILIES, SHIPPED_DATA, make_project

pytestmark = pytest.mark.usefixtures("prefect_api")  # flows run on one temporary Prefect API


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project of its own (the session's trained project has too small a pool for these batches) with a champion
    and the simulated batches: 300 rows each, drawn from its pool of about 450 rows
    (a 3,000-row sample of the shipped table, so a batch is as large as before while the pool stays apart), compared
    with a reference of about 900 holdout rows. Between a 300-row batch and that reference, a score distance of 0.1
    (the default prediction threshold) is about the 99th percentile of pure sampling noise, and the pool's churn rate
    differs from the holdout's by chance: the threshold is raised so an undrifted batch stays undrifted."""
    frame = pd.read_csv(SHIPPED_DATA)
    sample = frame.groupby("churn", group_keys=False).sample(frac=3000 / len(frame), random_state=7)
    root = tmp_path_factory.mktemp("monitored-project")
    params = make_project(
        root,
        sample.reset_index(drop=True),
        split__holdout_size=0.3,
        split__pool_size=0.15,
        monitor__prediction_threshold=0.15,
        simulate__batch_rows=300,
        monitor__min_new_rows=100,
        monitor__trigger="drift",  # these tests follow the drift rule; the performance rule has its own tests
        # the classical families only: these tests are about monitoring and retraining, not the MLP
        train__families=CLASSICAL_FAMILIES,
    )
    training(str(params))
    assert main(["simulate-drift", "--params", str(params)]) == 0
    return params


def _champion(params: Path) -> str | None:
    config = load_config(params)
    connect(config)
    return champion_version(config.params.registry.model_name, "champion")


def _versions(params: Path) -> int:
    from mlflow import MlflowClient

    connect(load_config(params))
    return len(MlflowClient().search_model_versions("name='optiflow-churn'"))


def test_a_scheduled_run_on_a_fresh_project_with_no_batch_completes_saying_so(
    tmp_path: Path, churn_sample: pd.DataFrame
) -> None:
    from prefect.client.orchestration import get_client

    params = make_project(tmp_path, churn_sample)  # fresh: never trained, no data/batches folder
    state = monitoring(str(params), return_state=True)
    assert state.is_completed() and state.result() == []
    with get_client(sync_client=True) as client:
        artifact = client.read_latest_artifacts()
    notes = [a.data for a in artifact if a.key == "monitoring-no-new-batches"]
    assert notes and "no new batches in data/batches (0 checked before)" in notes[0]
    assert not (tmp_path / "data/batches").exists() and not (tmp_path / "mlflow.db").exists()


def test_undrifted_batch_is_reported_and_retrains_nothing(trained: Path) -> None:
    root, before = trained.parent, _versions(trained)
    rows = monitoring(str(trained), batches="data/batches/001-control-1.parquet")
    assert [row["decision"] for row in rows] == ["ignored"] and rows[0]["drift_share"] == 0.0
    assert "no drift" in rows[0]["reason"] and _versions(trained) == before
    folder = root / "reports/monitoring/001-control-1"
    assert {p.name for p in folder.iterdir()} >= {"drift.html", "drift.json", "summary.json", "validation.json"}
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["quality"]["champion_roc_auc"] > 0.75 and summary["prediction_drift"] is not None
    assert (root / "reports/monitoring/history.png").is_file()
    assert (root / "data/monitored/001-control-1.parquet").is_file()


def test_late_labels_give_an_unlabelled_batch_its_realised_metrics(trained: Path, capsys) -> None:
    root = trained.parent
    labelled = pd.read_parquet(root / "data/batches/001-control-1.parquet")
    labelled.drop(columns=["churn"]).to_parquet(root / "unlabelled.parquet")
    (row,) = monitoring(str(trained), batches="unlabelled.parquet")
    summary = json.loads((root / "reports/monitoring/unlabelled/summary.json").read_text())
    assert summary["performance"]["realised"] is None and row["decision"] == "ignored"
    labelled.to_csv(root / "late.csv", index=False)
    assert main(["labels", "unlabelled", str(root / "late.csv"), "--params", str(trained)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((root / "reports/monitoring/unlabelled/summary.json").read_text())
    realised = summary["performance"]["realised"]["roc_auc"]
    assert 0.6 < realised < 1.0 and f"ROC AUC realised {realised:.4f}" in printed
    assert summary["quality_rows"] > 0 and summary["diagnosis"]["shift"]
    history = read_history(root / "reports/monitoring/history.csv")
    assert history.loc[history["batch_id"] == "unlabelled", "labelled_rows"].iloc[-1] == len(labelled)
    assert (root / "data/monitored/unlabelled.parquet").is_file()  # kept for the retraining windows
    assert main(["labels", "unlabelled", "missing.csv", "--params", str(trained)]) == 2


def test_batch_failing_validation_stops_with_a_clear_error_and_no_retrain(trained: Path) -> None:
    root = trained.parent
    batch = pd.read_parquet(root / "data/batches/001-control-1.parquet")
    batch["monthly_charges"] = batch["monthly_charges"] * 100  # an upstream switch to cents
    batch.to_csv(root / "cents.csv", index=False)
    champion, versions = _champion(trained), _versions(trained)
    plot = root / "reports/monitoring/history.png"
    drawn = plot.read_bytes() if plot.exists() else None
    with pytest.raises(ValidationFailed, match="monthly_charges") as failure:
        monitoring(str(trained), batches="cents.csv")
    assert "no retraining, the champion is unchanged" in str(failure.value)
    assert _champion(trained) == champion and _versions(trained) == versions
    history = read_history(root / "reports/monitoring/history.csv")
    assert history.iloc[-1]["decision"] == "invalid" and "expectations failed" in history.iloc[-1]["reason"]
    assert (root / "reports/monitoring/cents/validation.html").is_file()
    assert plot.read_bytes() != drawn  # the failed run still redrew the plot with the invalid batch's row
    assert not (root / "data/monitored/cents.parquet").exists()


def test_a_batch_broken_upstream_is_quarantined_not_retrained_on(trained: Path) -> None:
    root, versions = trained.parent, _versions(trained)
    (row,) = monitoring(str(trained), batches="data/batches/005-broken_units.parquet")
    assert row["decision"] == "quarantined" and "column 'tenure': mean size" in row["reason"]
    assert _versions(trained) == versions and not (root / "data/monitored/005-broken_units.parquet").exists()
    assert main(["quarantine", "list", "--params", str(trained)]) == 0
    assert (root / "data/quarantine/005-broken_units.parquet").is_file()


def test_drifted_batch_retrains_through_the_training_flow(trained: Path) -> None:
    root, versions = trained.parent, _versions(trained)
    rows = monitoring(str(trained), batches="data/batches/002-price_increase.parquet", retrain="auto")
    (row,) = rows
    assert row["decision"] in ("promoted", "rejected") and row["new_version"] == str(versions + 1)
    assert "drift share" in row["reason"] and "retrained on data/retraining/002-price_increase.parquet" in row["reason"]
    assert _versions(trained) == versions + 1
    registration = json.loads((root / "reports/registration.json").read_text())
    assert registration["decision"]["outcome"] == row["decision"]  # the champion moved only if the gates said so
    assert (_champion(trained) == row["new_version"]) == (row["decision"] == "promoted")
    # the retraining set: the newest batch only evaluates, and no key both trains and evaluates
    retraining = pd.read_parquet(root / "data/retraining/002-price_increase.parquet").set_index("row_key")
    newest = pd.read_parquet(root / "data/batches/002-price_increase.parquet")
    assert (retraining.loc[newest["row_key"].unique(), "row_role"] == "holdout").all()
    processed = {name: pd.read_parquet(root / "data/processed" / f"{name}.parquet") for name in ("train", "valid")}
    processed["holdout"] = pd.read_parquet(root / "data/processed/holdout.parquet")
    learnt = set(processed["train"]["row_key"]) | set(processed["valid"]["row_key"])
    assert learnt and not learnt & set(processed["holdout"]["row_key"])
    control = pd.read_parquet(root / "data/monitored/001-control-1.parquet")  # an older batch: it may train
    assert set(control["row_key"]) - set(newest["row_key"]) <= learnt
    comparison = MlflowClient().get_model_version("optiflow-churn", row["new_version"]).tags["optiflow.comparison"]
    assert comparison.startswith("vs champion v1: ROC AUC challenger")


def test_deployments_carry_schedules_typed_parameters_and_the_drift_trigger(trained: Path) -> None:
    from prefect.utilities.callables import parameter_schema

    from flows.deployments import deployments

    training_deployment, monitoring_deployment, scoring_deployment, release_deployment = deployments(str(trained))
    assert [d.name for d in (training_deployment, monitoring_deployment, scoring_deployment, release_deployment)] == [
        "training",
        "monitoring",
        "scoring",
        "release",
    ]
    assert training_deployment.parameters == {"params_path": str(trained.resolve())}
    form = parameter_schema(training).properties  # what the Prefect UI renders as the run form
    assert {"dataset", "sampler", "n_trials", "overrides"} <= set(form)
    assert {"batches", "drift_share", "max_quality_drop", "sample_rows", "retrain"} <= set(
        parameter_schema(monitoring).properties
    )
    assert {"input_path", "output_path", "alias", "version"} <= set(parameter_schema(scoring).properties)
    (trigger,) = training_deployment.triggers
    assert trigger.expect == {"optiflow.drift.detected"}
    assert trigger.parameters["dataset"] == "{{ event.payload.dataset }}"
    assert [s.schedule.cron for s in training_deployment.schedules] == ["0 2 * * *"]
    assert [s.schedule.cron for s in monitoring_deployment.schedules] == ["0 * * * *"]
    assert [s.schedule.cron for s in scoring_deployment.schedules] == ["30 * * * *"]
    assert [s.schedule.cron for s in release_deployment.schedules] == ["45 * * * *"]


def test_serve_without_a_server_says_how_to_start_one(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert main(["serve"]) == 2
    assert "prefect server start" in capsys.readouterr().err


def test_batches_reuse_the_loaded_champion_until_the_alias_names_another_version(trained_copy: Path) -> None:
    """Batch after batch, the champion loaded for the last one is reused (no second download, verification and
    load); once the alias names another version, that version is loaded."""
    import mlflow

    from optiflow.monitoring.batches import load_champion
    from tests.registered import register_model, typed_frame

    config = load_config(trained_copy)
    first = load_champion(config)
    assert load_champion(config) is first
    with mlflow.start_run():  # as the register stage does: the version's run holds its test figures
        mlflow.log_metrics({"test/roc_auc": 0.8, "test/f1": 0.5})
        version = register_model(config, typed_frame(config, pd.read_csv(config.source)))
    name = config.params.registry.model_name
    MlflowClient().set_registered_model_alias(name, config.params.registry.champion_alias, version)
    promoted = load_champion(config)
    assert promoted is not first and promoted.version == version != first.version
    assert load_champion(config) is promoted
