"""The training flow end to end on a sample: registry, champion alias, Prefect cache, and bad input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from flows.cli import main
from flows.training import training
from optiflow.config import load_config
from optiflow.models import load_candidate
from optiflow.registry import connect
from tests.conftest import make_project

STAGES = ["ingest", "validate", "split", "tune", "train", "evaluate", "register"]


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


def test_flow_registers_a_champion_then_reuses_cached_stages(project: Path) -> None:
    first = training(str(project))
    assert [r["stage"] for r in first] == STAGES
    assert set(_states(first).values()) == {"Completed"}
    registered = first[-1]
    assert registered["version"] == "1" and registered["decision"]["promote"]
    assert _registry(project) == (["1"], "1")

    version = MlflowClient().get_model_version("optiflow-churn", "1")
    assert version.tags["data.sha256"] == hashlib.sha256((project.parent / "data/input.csv").read_bytes()).hexdigest()
    assert version.tags["data.rows"] == "1500" and "git.commit" in version.tags
    run = MlflowClient().get_run(version.run_id)
    assert run.data.metrics["test_roc_auc"] == pytest.approx(first[STAGES.index("evaluate")]["test"]["roc_auc"])

    again = training(str(project))
    assert set(_states(again).values()) == {"Cached"}
    assert _registry(project) == (["1"], "1")


def test_deleted_outputs_are_rebuilt_and_unchanged_downstream_stays_cached(project: Path) -> None:
    training(str(project))
    import shutil

    shutil.rmtree(project.parent / "models" / "candidates")
    states = _states(training(str(project)))
    assert states["train"] == "Completed"
    assert states["evaluate"] == "Cached" and states["register"] == "Cached"  # byte-identical models


def test_a_param_change_reruns_only_dependent_stages_and_equal_model_keeps_champion(project: Path) -> None:
    training(str(project))
    results = training(str(project), overrides={"evaluate.threshold": 0.4})
    states = _states(results)
    assert [states[s] for s in STAGES[:5]] == ["Cached"] * 5
    assert states["evaluate"] == "Completed" and states["register"] == "Completed"
    assert not results[-1]["decision"]["promote"]
    assert _registry(project) == (["1", "2"], "1")


def test_train_fits_the_tuned_hyperparameters(project: Path) -> None:
    training(str(project))
    root = project.parent
    for family in ("logistic_regression", "hist_gradient_boosting"):
        tuned = json.loads((root / "models/tuning" / f"{family}.json").read_text())["best_params"]
        fitted = json.loads((root / "models/candidates" / family / "meta.json").read_text())["hyperparameters"]
        assert tuned and all(fitted[key] == value for key, value in tuned.items()), family
        model_params = load_candidate(root / "models/candidates" / family)[0].named_steps["model"].get_params()
        assert all(model_params[key] == value for key, value in tuned.items()), family


def _snapshot(root: Path) -> dict[str, str]:
    """Every output file's hash, except the typed copy of the latest source and the failure report."""
    skipped = ("data/interim", "data/input", "data/broken", "reports/validation-failures", "params")
    files = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_file() and not relative.startswith(skipped) and path.suffix != ".db":
            files[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, churn_sample: pd.DataFrame) -> Path:
    root = tmp_path_factory.mktemp("trained")
    params = make_project(root, churn_sample.assign(customer_id=range(len(churn_sample))))
    training(str(params))
    return params


def _broken(kind: str, sample: pd.DataFrame) -> tuple[str, pd.DataFrame | bytes | None]:
    frame = sample.assign(customer_id=range(len(sample)))
    return {
        "missing-file": ("data source not found", None),
        "empty-file": ("file is empty", b""),
        "missing-target": ("missing required column(s) ['churn']", frame.drop(columns=["churn"])),
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
    overrides = ["-S", f"data.source=data/{source.name}"]
    if kind == "duplicate-ids":
        overrides += ["-S", "data.id_columns=[customer_id]"]

    code = main(["train", "--params", str(trained), *overrides])

    error = capsys.readouterr().err
    assert code == 2
    assert message in error and source.name in error
    assert _registry(trained) == registry
    assert _snapshot(root) == before


def test_unknown_params_key_fails_before_anything_runs(trained: Path, capsys: pytest.CaptureFixture) -> None:
    raw = yaml.safe_load(trained.read_text())
    raw["split"]["tset_size"] = 0.3
    bad = trained.parent / "params-typo.yaml"
    bad.write_text(yaml.safe_dump(raw))
    before, registry = _snapshot(trained.parent), _registry(trained)
    assert main(["train", "--params", str(bad)]) == 2
    assert "split.tset_size: unknown key" in capsys.readouterr().err
    assert _registry(trained) == registry and _snapshot(trained.parent) == before
