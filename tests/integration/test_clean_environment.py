"""A registered model loads and scores in a clean virtualenv holding only what its own requirements.txt installs
(the optiflow wheel logged with the model, and the hash-pinned closure from the package registry), far from this
checkout, installed the way the Dockerfile `mlflow models generate-dockerfile` writes does it: MLflow's own install
step, run from another folder than the model's."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from optiflow.release.registry import load_registered
from tests.conftest import REPO
from tests.registered import register_model, registry_project, typed_frame

pytestmark = pytest.mark.slow

SCORE = """
import json, sys
import mlflow, pandas as pd, optiflow
model = mlflow.pyfunc.load_model(sys.argv[1])
scored = model.predict(pd.read_csv(sys.argv[2]))
bad = pd.read_csv(sys.argv[2]).head(2).assign(tenure=-5000)
try:
    model.predict(bad)
    refusal = None
except Exception as exc:
    refusal = str(exc)
print(json.dumps({"package": optiflow.__file__, "probability": scored["probability"].tolist(),
                  "label": scored["label"].tolist(), "refusal": refusal}))
"""


def test_the_model_loads_in_a_clean_virtualenv_from_its_own_requirements(
    tmp_path: Path, churn_sample: pd.DataFrame
) -> None:
    config = registry_project(tmp_path / "project", churn_sample)
    version = register_model(config, typed_frame(config, churn_sample))
    model = Path(mlflow.artifacts.download_artifacts(f"models:/optiflow-churn/{version}", dst_path=str(tmp_path)))
    away = tmp_path / "elsewhere"
    away.mkdir()
    churn_sample.head(30).to_csv(away / "raw.csv", index=False)  # raw rows: int64 tenure, the target included
    (away / "score.py").write_text(SCORE)
    generate = [sys.executable, "-m", "mlflow", "models", "generate-dockerfile", "-m", str(model)]
    generated = subprocess.run(
        [*generate, "-d", str(tmp_path / "image")], capture_output=True, text=True, timeout=300, check=False
    )
    assert generated.returncode == 0, generated.stderr[-3000:]
    dockerfile = (tmp_path / "image" / "Dockerfile").read_text()
    (install_step,) = re.findall(r'^RUN python -c "(.*_install_pyfunc_deps.*)"$', dockerfile, re.M)
    assert "env_manager='local'" in install_step, install_step  # pip run from WORKDIR /opt/mlflow, not the model's
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True, timeout=120)
    python = tmp_path / "venv" / "bin" / "python"
    env = {key: value for key, value in os.environ.items() if key not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    # the command that install step runs, given the model's python_env.yaml (then once more inside MLflow's own code)
    install = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile"]
    done = subprocess.run(
        [*install, "-r", str(model / "requirements.txt")], cwd=away, env=env, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    step = install_step.replace("/opt/ml/model", str(model))
    done = subprocess.run([str(python), "-c", step], cwd=away, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]

    ran = subprocess.run(
        [str(python), "score.py", str(model), "raw.csv"], cwd=away, env=env, capture_output=True, text=True, timeout=300
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    result = json.loads(ran.stdout.splitlines()[-1])
    installed = Path(result["package"]).resolve()
    assert installed.is_relative_to((tmp_path / "venv").resolve()) and not installed.is_relative_to(REPO)
    loaded = load_registered("optiflow-churn", version=version)
    expected = loaded.model.predict_proba(typed_frame(config, churn_sample.head(30))[list(loaded.spec.features)])
    np.testing.assert_allclose(result["probability"], expected[:, 1], rtol=0, atol=1e-9)
    assert result["label"] == np.where(expected[:, 1] >= 0.4, "Yes", "No").tolist()
    assert result["refusal"] is not None and "row 0: tenure: -5000.0 outside" in result["refusal"]
