"""The scoring flow and `optiflow predict` over a small registered champion."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from flows.cli import main
from flows.scoring import scoring
from tests.conftest import REPO
from tests.registered import register_model, registry_project, typed_frame

pytestmark = pytest.mark.usefixtures("prefect_api")  # flows run on one temporary Prefect API


def test_predict_scores_a_file_with_the_champion_and_reports_cache_hits(
    tmp_path: Path, churn_sample: pd.DataFrame, capsys
) -> None:
    config = registry_project(tmp_path, churn_sample)
    version = register_model(config, typed_frame(config, churn_sample))
    MlflowClient().set_registered_model_alias("optiflow-churn", "champion", version)
    frame = churn_sample.drop(columns=["churn"]).head(120).astype({"contract": object})
    frame.loc[5, "contract"] = "Weekly"
    frame.to_csv(tmp_path / "input.csv", index=False)
    params = str(tmp_path / "params.yaml")

    (first,) = scoring(
        str(tmp_path / "input.csv"), str(tmp_path / "out.parquet"), params, overrides={"score.cache": True}
    )
    assert (first["rows_scored"], first["rows_rejected"], first["cache_hits"]) == (119, 1, 0)
    assert first["model_version"] == version

    files = ["--input", str(tmp_path / "input.csv"), "--output", str(tmp_path / "out.csv")]
    options = ["--chunk-rows", "50", "--workers", "2", "--reasons", "2", "--cache", "--version", version]
    code = main(["predict", "--params", params, *files, *options])
    assert code == 0
    printed = capsys.readouterr().out
    assert "rows scored" in printed and "119" in printed
    scored = pd.read_csv(tmp_path / "out.csv")
    assert len(scored) == 119 and {"probability", "label", "reason_1", "reason_2"} <= set(scored.columns)
    rejects = pd.read_csv(tmp_path / "out.rejects.csv")
    assert rejects["reason"].tolist() == ["contract: 'Weekly' not in the allowed values"]


def test_predict_exits_2_naming_a_missing_input(tmp_path: Path, churn_sample: pd.DataFrame, capsys) -> None:
    config = registry_project(tmp_path, churn_sample)
    register_model(config, typed_frame(config, churn_sample))
    files = ["--input", str(tmp_path / "nope.csv"), "--output", str(tmp_path / "out.csv")]
    code = main(["predict", "--params", str(tmp_path / "params.yaml"), *files, "--version", "1"])
    assert code == 2
    assert f"{tmp_path / 'nope.csv'}: input file not found" in capsys.readouterr().err


def test_predict_is_a_small_job_no_prefect_no_torch_no_sklearn_when_onnx_serves(
    tmp_path: Path, churn_sample: pd.DataFrame
) -> None:
    """`optiflow predict` with a parity-checked champion loads the verified graph and scores: it imports neither
    Prefect (no flow run, no temporary server) nor the Python model's libraries."""
    config = registry_project(tmp_path, churn_sample)
    typed = typed_frame(config, churn_sample)
    version = register_model(config, typed, parity_rows=typed.sample(300, random_state=1))
    MlflowClient().set_registered_model_alias("optiflow-churn", "champion", version)
    churn_sample.drop(columns=["churn"]).head(50).to_csv(tmp_path / "input.csv", index=False)
    script = (
        "import sys\n"
        "from flows.cli import main\n"
        f"code = main(['predict', '-v', '--params', {str(tmp_path / 'params.yaml')!r}, '--input', "
        f"{str(tmp_path / 'input.csv')!r}, '--output', {str(tmp_path / 'out.csv')!r}])\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'prefect', 'torch', 'sklearn', 'skops'})\n"
        "print('imported:', heavy)\n"
        "sys.exit(code)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "imported: []" in done.stdout
    assert "ONNX Runtime (max |p_onnx - p_python|" in done.stderr and "parity holds" in done.stderr
    assert len(pd.read_csv(tmp_path / "out.csv")) == 50


def test_a_configured_prefect_server_that_does_not_answer_stops_the_run(
    tmp_path: Path, churn_sample: pd.DataFrame, capsys
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    config = registry_project(tmp_path, churn_sample)
    register_model(config, typed_frame(config, churn_sample))
    churn_sample.drop(columns=["churn"]).head(20).to_csv(tmp_path / "input.csv", index=False)
    files = ["--input", str(tmp_path / "input.csv"), "--output", str(tmp_path / "out.csv"), "--version", "1"]
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        code = main(["predict", "--params", str(tmp_path / "params.yaml"), *files, "--task-runner", "dask"])
    assert code == 2
    error = capsys.readouterr().err
    assert "Prefect server at http://127.0.0.1:9/api (PREFECT_API_URL) does not answer" in error
    assert not (tmp_path / "out.csv").exists()
