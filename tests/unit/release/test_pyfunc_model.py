"""The registered model as MLflow's own clients load it (``mlflow.pyfunc.load_model``): natural pandas input in,
the row contract checked inside ``predict``, MLflow's classifier output out, and requirements that match the lock."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.exceptions import MlflowException
from packaging.utils import canonicalize_name

from optiflow.config import Config
from optiflow.io import sha256_file
from optiflow.release import pyfunc_model
from optiflow.release.registry import MODEL_REQUIREMENTS, load_registered
from tests.registered import register_model, registry_project, typed_frame

NAME = "optiflow-churn"
LOCK = Path(__file__).resolve().parents[3] / "requirements.lock"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, churn_sample: pd.DataFrame) -> tuple[Config, pd.DataFrame, str]:
    config = registry_project(tmp_path_factory.mktemp("pyfunc"), churn_sample)
    version = register_model(config, typed_frame(config, churn_sample))
    return config, churn_sample, f"models:/{NAME}/{version}"


def test_raw_csv_rows_with_integer_numbers_and_the_target_column_are_scored(served, tmp_path: Path) -> None:
    _, sample, uri = served
    rows = sample.head(50).copy()
    rows["monthly_charges"] = rows["monthly_charges"].round().astype(int)  # a file written without decimals
    rows.to_csv(tmp_path / "raw.csv", index=False)
    raw = pd.read_csv(tmp_path / "raw.csv")
    assert raw["tenure"].dtype == np.int64 and raw["monthly_charges"].dtype == np.int64

    model = mlflow.pyfunc.load_model(uri)
    scored = model.predict(raw)  # churn (the target) is an extra column: ignored

    assert list(scored.columns) == ["label", "probability"] and len(scored) == 50
    assert scored["probability"].between(0, 1).all()
    as_floats = model.predict(raw.drop(columns=["churn"]).astype({"tenure": float, "monthly_charges": float}))
    np.testing.assert_array_equal(scored["probability"].to_numpy(), as_floats["probability"].to_numpy())
    spec = model._model_impl.spec  # the label follows the registered threshold
    assert scored["label"].tolist() == np.where(scored["probability"] >= spec.threshold, "Yes", "No").tolist()


def test_json_records_with_a_missing_value_the_settings_fill_are_scored(served) -> None:
    _, sample, uri = served
    records = sample.drop(columns=["churn"]).head(3).to_dict(orient="records")
    records[0]["total_charges"] = None  # data.fill_missing fills it with 0.0, as at training
    scored = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame(records))
    assert scored["probability"].notna().all() and len(scored) == 3


def test_rows_breaking_the_contract_fail_the_call_naming_row_column_rule_and_value(served) -> None:
    _, sample, uri = served
    rows = sample.drop(columns=["churn"]).head(6).reset_index(drop=True)
    rows.loc[1, "tenure"] = -5000
    rows.loc[3, "contract"] = "Quarterly"
    rows.loc[4, "internet_service"] = None

    with pytest.raises(MlflowException) as raised:
        mlflow.pyfunc.load_model(uri).predict(rows)

    message = raised.value.message
    assert message.startswith("3 of 6 row(s) break the model's input contract, nothing was scored")
    assert "row 1: tenure: -5000.0 outside [0.0, 120.0]" in message
    assert "row 3: contract: 'Quarterly' not in the allowed values" in message
    assert "row 4: internet_service: missing" in message
    assert raised.value.error_code == "INVALID_PARAMETER_VALUE"  # `mlflow models serve` answers 400


def test_a_missing_feature_column_is_named(served) -> None:
    _, sample, uri = served
    with pytest.raises(MlflowException, match=r"missing inputs \['tenure'\]"):
        mlflow.pyfunc.load_model(uri).predict(sample.drop(columns=["churn", "tenure"]).head(2))


def test_signature_accepts_any_value_per_feature_and_names_the_outputs(served) -> None:
    _, sample, uri = served
    signature = mlflow.models.get_model_info(uri).signature
    features = [column for column in sample.columns if column != "churn"]
    assert sorted(signature.inputs.input_names()) == sorted(features)
    assert {repr(spec.type) for spec in signature.inputs.inputs} == {"Any"}
    assert [(spec.name, spec.type.name) for spec in signature.outputs.inputs] == [
        ("label", "string"),
        ("probability", "double"),
    ]


def test_requirements_install_the_logged_wheel_and_the_locked_closure_all_hash_pinned(served, tmp_path: Path) -> None:
    _, _, uri = served
    stored = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path)))
    lines = (stored / "requirements.txt").read_text().splitlines()
    links, wheel_line, *pins = lines
    assert links == "--find-links data/optiflow/wheels"
    (path,) = (stored / "data/optiflow/wheels").glob("optiflow-*.whl")
    name, option = wheel_line.split(" ")
    assert name == f"optiflow=={path.name.split('-')[1]}"
    assert option == f"--hash=sha256:{sha256_file(path)}"  # the wheel stored with the model, as built
    entries = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\\n\s+(--hash=sha256:[0-9a-f]{64})", LOCK.read_text(), re.M)
    locked = {f"{canonicalize_name(name)}=={pin}": digest for name, pin, digest in entries}
    assert all(pin.split(" ", 1)[0] in locked and pin.endswith(locked[pin.split(" ", 1)[0]]) for pin in pins), pins
    names = {pin.split("==")[0] for pin in pins}
    assert {canonicalize_name(package) for package in MODEL_REQUIREMENTS} <= names and "prefect" not in names
    with zipfile.ZipFile(path) as wheel:  # the exact package: the loader MLflow runs is in it, unchanged
        packaged = wheel.read("optiflow/release/pyfunc_model.py")
        metadata = wheel.read(next(name for name in wheel.namelist() if name.endswith(".dist-info/METADATA")))
    assert packaged == (Path(pyfunc_model.__file__)).read_bytes()
    needs = [line.split(": ", 1)[1] for line in metadata.decode().splitlines() if line.startswith("Requires-Dist")]
    runtime = [need.split("==") for need in needs if ";" not in need]  # the dev extra aside
    needed = {f"{canonicalize_name(name)}=={pin}" for name, pin in runtime}
    assert needed == {f"{canonicalize_name(package)}=={version(package)}" for package in MODEL_REQUIREMENTS}
    assert needed <= {pin.split(" ", 1)[0] for pin in pins}  # what the wheel asks for is pinned and hashed
    # pip finds the wheel beside the requirements file from any folder (the generated Dockerfile runs it from
    # /opt/mlflow), under hash checking
    (stored / "wheel.txt").write_text(f"{links}\n{wheel_line}\n")
    check = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-deps", "--no-index", "-r"]
    done = subprocess.run([*check, str(stored / "wheel.txt")], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0 and "Would install optiflow-" in done.stdout, done.stderr
    (stored / "wheel.txt").write_text(f"{links}\n{wheel_line.replace(option[-8:], '00000000')}\n")
    refused = subprocess.run([*check, str(stored / "wheel.txt")], cwd=tmp_path, capture_output=True, text=True)
    assert refused.returncode != 0 and "THESE PACKAGES DO NOT MATCH THE HASHES" in refused.stderr
    # nothing unhashed to install beside them: MLflow's Dockerfile passes build dependencies in the same pip call
    assert yaml.safe_load((stored / "python_env.yaml").read_text())["build_dependencies"] == []


def test_no_stored_file_names_the_training_checkout_and_the_version_still_verifies(served, tmp_path: Path) -> None:
    config, _, uri = served
    stored = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path)))
    checkout = str(config.root.resolve())
    texts = {path.relative_to(stored): path.read_bytes() for path in stored.rglob("*") if path.is_file()}
    assert [name for name, text in texts.items() if checkout.encode() in text] == []
    assert "artifact_path: model\n" in texts[Path("MLmodel")].decode()
    version = uri.rsplit("/", 1)[1]
    assert load_registered(NAME, version=version).version == version  # the sha256 record covers the rewritten MLmodel


def test_model_config_output_selects_one_column_and_refuses_an_unknown_one(served) -> None:
    _, sample, uri = served
    rows = sample.head(4)
    both = mlflow.pyfunc.load_model(uri).predict(rows)
    label = mlflow.pyfunc.load_model(uri, model_config={"output": "label"}).predict(rows)
    probability = mlflow.pyfunc.load_model(uri, model_config={"output": "probability"}).predict(rows)
    assert label.tolist() == both["label"].tolist() and probability.tolist() == both["probability"].tolist()
    with pytest.raises(MlflowException, match=r"'proba' is not one of \['frame', 'label', 'probability'\]"):
        mlflow.pyfunc.load_model(uri, model_config={"output": "proba"})


def test_mlflow_evaluate_as_a_classifier_reproduces_the_metrics_at_the_registered_threshold(served) -> None:
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    config, sample, uri = served
    rows = sample.tail(300)
    loaded = mlflow.pyfunc.load_model(uri)._model_impl
    typed = typed_frame(config, rows)
    predicted = np.where(loaded.model.predict_proba(typed[list(loaded.spec.features)])[:, 1] >= 0.4, "Yes", "No")
    truth = rows["churn"].to_numpy()

    with mlflow.start_run():
        result = mlflow.models.evaluate(
            uri,
            rows,
            targets="churn",
            model_config={"output": "label"},
            model_type="classifier",
            evaluator_config={"pos_label": "Yes", "log_explainer": False, "log_model_explainability": False},
        )

    expected = {
        "accuracy_score": accuracy_score(truth, predicted),
        "f1_score": f1_score(truth, predicted, pos_label="Yes"),
        "precision_score": precision_score(truth, predicted, pos_label="Yes"),
        "recall_score": recall_score(truth, predicted, pos_label="Yes"),
    }
    assert {name: result.metrics[name] for name in expected} == pytest.approx(expected, abs=1e-12)
