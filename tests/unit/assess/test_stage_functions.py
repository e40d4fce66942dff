"""The core functions behind the evaluate, fairness, explain and compress stages, on tiny inline candidates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from optiflow.assess.compression import compress_candidate
from optiflow.assess.evaluation import evaluate_candidates
from optiflow.assess.explain import explain_model
from optiflow.assess.fairness import NOT_REGISTERED, assess_fairness
from optiflow.config import DataParams, EvaluateParams, ExplainParams, FairnessParams, load_config
from optiflow.data.schema import resolve_schema
from optiflow.errors import ConfigError, DataError
from optiflow.modeling.candidates import save_candidate
from optiflow.modeling.families import build_pipeline
from tests.conftest import make_project
from tests.unit.conftest import churn_like

DATA = DataParams(
    source="x.csv", target="churn", positive_label="Yes", negative_label="No", sensitive_features=("group",)
)
SEED = 3


def _frame(n: int, seed: int) -> pd.DataFrame:
    """Churn-like rows whose label depends on x1 and on the sensitive 0/1 column `group`."""
    frame = churn_like(n, seed, group_effect=1.5, x2_effect=0.0)
    churn = np.where(frame["y"] == 1, "Yes", "No")
    return frame.drop(columns=["other", "y"]).assign(churn=churn)


@pytest.fixture(scope="module")
def splits() -> dict[str, pd.DataFrame]:
    return {"train": _frame(400, 1), "valid": _frame(200, 2), "test": _frame(200, 3)}


@pytest.fixture(scope="module")
def candidates(splits, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A logistic regression, and one fitted on shuffled labels (it ranks by chance)."""
    root = tmp_path_factory.mktemp("candidates")
    train = splits["train"]
    schema = resolve_schema(train, DATA)
    y = (train["churn"] == "Yes").to_numpy(dtype=int)
    folders = {}
    for name, target in (("logistic_regression", y), ("shuffled", np.random.default_rng(0).permutation(y))):
        model = build_pipeline("logistic_regression", {}, schema, SEED).fit(train[list(schema.features)], target)
        save_candidate(root / name, model, {"family": "logistic_regression", "features": list(schema.features)})
        folders[name] = root / name
    return folders


def test_evaluate_chooses_on_valid_calibrates_there_and_tests_only_the_final_model(splits, candidates) -> None:
    from sklearn.calibration import CalibratedClassifierCV

    settings = EvaluateParams(threshold_policy="max_f1", slices=("plan",))
    result = evaluate_candidates(candidates, splits["valid"], splits["test"], DATA, settings, "test.parquet", SEED)
    assert result.selection.family == "logistic_regression" and list(result.validation) == list(candidates)
    assert result.validation["logistic_regression"]["roc_auc"] > result.validation["shuffled"]["roc_auc"] + 0.1
    assert isinstance(result.model, CalibratedClassifierCV) and result.calibration.method in ("sigmoid", "isotonic")
    assert set(result.calibration.brier) == {"sigmoid", "isotonic"} and result.calibration.rows == 200
    report = result.report()
    assert report["selected"] == "logistic_regression" and report["selected_on"] == "valid"
    assert report["candidates"] == result.validation and report["test_rows"] == report["valid_rows"] == 200
    assert report["threshold"] == result.threshold == report["test"]["threshold"]
    assert {"ece", "ece_uncalibrated", "roc_auc"} <= set(report["test"])
    assert {name: row["data"] for name, row in report["decisions"].items()} == {
        "model": "valid",
        "calibration": "valid",
        "threshold": "valid",
        "test metrics": "test",
    }
    assert len(result.confusion) == 200 and set(result.curves["roc"]["family"]) == {"logistic_regression"}
    assert set(result.reliability_frame()["model"]) == {"uncalibrated", f"{result.calibration.method} calibration"}
    assert {"group", "plan"} <= set(result.slices["slice"]) and set(result.slices["family"]) == {"logistic_regression"}
    assert [(row["candidate"], row["selected"]) for row in result.table_rows()] == [
        ("logistic_regression", True),
        ("shuffled", False),
    ]
    assert result.meta["calibration"]["method"] == result.calibration.method and result.meta["threshold"] > 0


def _noisy_labels(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    return frame.assign(churn=np.random.default_rng(seed).choice(["Yes", "No"], size=len(frame)))


def test_test_labels_replaced_by_noise_change_no_choice(splits, candidates) -> None:
    """Model, calibration and threshold come from the validation split: noise in place of the test labels moves
    the test figures only. The fairness stage's decision to mitigate, and on which columns, is made on valid too."""
    settings = EvaluateParams(threshold_policy="max_f1")
    honest = evaluate_candidates(candidates, splits["valid"], splits["test"], DATA, settings, "t", SEED)
    noisy_test = _noisy_labels(splits["test"], 11)
    noisy = evaluate_candidates(candidates, splits["valid"], noisy_test, DATA, settings, "t", SEED)
    assert noisy.report()["decisions"]["test metrics"] == honest.report()["decisions"]["test metrics"]
    for key in ("selected", "threshold", "calibration", "candidates"):
        assert noisy.report()[key] == honest.report()[key], key
    assert noisy.test["roc_auc"] != honest.test["roc_auc"]  # the test split was scored, and only reported

    strict = FairnessParams(max_equalized_odds_difference=0.02, min_group_size=20)  # label-dependent gaps
    metrics = {"selected": "logistic_regression", "threshold": 0.4}
    folder = candidates["logistic_regression"]
    fair = assess_fairness(metrics, folder, splits["test"], splits["valid"], DATA, strict, SEED).payload
    unfair = assess_fairness(metrics, folder, noisy_test, splits["valid"], DATA, strict, SEED).payload
    assert fair["mitigation_decided_on"] == unfair["mitigation_decided_on"]
    assert fair["mitigation"]["columns"] == unfair["mitigation"]["columns"]
    assert fair["mitigation"]["thresholds"] == unfair["mitigation"]["thresholds"]
    assert fair["report"] != unfair["report"]  # the test-split report moved with the labels


def test_a_slice_column_missing_from_the_test_split_is_a_data_error(splits, candidates) -> None:
    settings = EvaluateParams(slices=("region",))
    with pytest.raises(DataError, match=r"test\.parquet: slice column\(s\) \['region'\]"):
        evaluate_candidates(candidates, splits["valid"], splits["test"], DATA, settings, "test.parquet", SEED)


METRICS = {"selected": "logistic_regression", "threshold": 0.4}


def test_fairness_without_sensitive_features_has_nothing_to_check(splits, candidates) -> None:
    data = DATA.model_copy(update={"sensitive_features": ()})
    result = assess_fairness(
        METRICS, Path("never-loaded"), splits["test"], splits["valid"], data, FairnessParams(), SEED
    )
    assert result.gates.passed and result.table.empty and result.payload["report"] is None
    assert result.payload["note"].startswith("no data.sensitive_features") and result.payload["gates"] == []


def test_a_failing_fairness_gate_is_mitigated_and_reported_never_registered(splits, candidates) -> None:
    strict = FairnessParams(
        max_demographic_parity_difference=0.01, max_equalized_odds_difference=None, min_group_size=20, mitigate=True
    )
    result = assess_fairness(
        METRICS, candidates["logistic_regression"], splits["test"], splits["valid"], DATA, strict, SEED
    )
    payload = result.payload
    assert not result.gates.passed and not payload["passed"] and payload["threshold"] == 0.4
    assert payload["sensitive_features"] == ["group"] and payload["report"] is not None
    mitigation = payload["mitigation"]
    assert mitigation["registered"] is False and mitigation["note"] == NOT_REGISTERED
    assert mitigation["columns"] == ["group"] and mitigation["fitted_on"] == "valid"
    assert payload["mitigation_decided_on"]["data"] == "valid" and payload["mitigation_decided_on"]["rows"] == 200
    assert list(result.table.columns[:3]) == ["model", "feature", "group"]
    assert set(result.table["model"]) == {"logistic_regression", "logistic_regression+threshold_optimizer"}
    rows = result.table_rows()
    assert len(rows) == len(result.table) and not any(
        isinstance(v, float) and np.isnan(v) for r in rows for v in r.values()
    )


def test_explain_model_cross_checks_shap_with_permutation_on_the_same_rows(splits, candidates) -> None:
    from optiflow.modeling.candidates import load_candidate

    model, _ = load_candidate(candidates["logistic_regression"])
    settings = ExplainParams(max_rows=50, background_rows=30, top_k=2, permutation_repeats=2)
    result = explain_model(model, splits["train"], splits["test"], DATA, settings, SEED)
    assert result.explanation.kind == "linear" and len(result.explanation.values) == 50
    assert result.background_rows == 30 and len(result.permutation) == 4  # one row per original column
    summary = result.summary("logistic_regression", ["shap_bar.png"])
    assert summary["model"] == "logistic_regression" and summary["rows_explained"] == 50
    assert summary["plots"] == ["shap_bar.png"] and summary["disagreements"] == result.disagreements
    top = summary["top_columns"]
    assert [item["rank"] for item in top] == [1, 2, 3, 4] and top[0]["column"] == "x1"


def test_compress_candidate_skips_an_untrained_family_and_refuses_one_that_is_not_pytorch(
    tmp_path: Path, splits, candidates
) -> None:
    params = load_config(make_project(tmp_path, compress__family="mlp")).params
    outcome = compress_candidate(candidates, splits["train"], splits["valid"], splits["test"], params)
    assert outcome.candidate is None and outcome.chosen is None and outcome.figures == {}
    assert outcome.selection == {"chosen": None, "message": outcome.message} and "was not trained" in outcome.message
    assert outcome.report["fallback"] and outcome.table.to_csv(index=False) == "variant\n"
    linear = load_config(make_project(tmp_path, compress__family="logistic_regression")).params
    with pytest.raises(ConfigError, match="is not a PyTorch family"):
        compress_candidate(candidates, splits["train"], splits["valid"], splits["test"], linear)
