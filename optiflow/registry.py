"""MLflow tracking and the model registry: one run per pipeline run, one version per registration,
and the champion alias moved only when the new version wins."""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pandas as pd

from optiflow.config import Config, TrackingParams

log = logging.getLogger(__name__)

MODEL_REQUIREMENTS = ("scikit-learn", "skops", "pandas", "numpy", "scipy")
_EXPORTED_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@dataclass(frozen=True)
class AliasDecision:
    promote: bool
    reason: str
    challenger_score: float
    champion_version: str | None = None
    champion_score: float | None = None


@dataclass(frozen=True)
class Registration:
    model_name: str
    version: str
    run_id: str
    alias: str
    decision: AliasDecision
    tracking_uri: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "decision": asdict(self.decision)}


def tracking_uri(tracking: TrackingParams, root: Path) -> str:
    """MLFLOW_TRACKING_URI wins; a relative sqlite path in params resolves against the project root."""
    from_env = os.environ.get("MLFLOW_TRACKING_URI")
    if from_env:
        return from_env
    prefix = "sqlite:///"
    if tracking.uri.startswith(prefix) and not tracking.uri[len(prefix) :].startswith("/"):
        return prefix + str((root / tracking.uri[len(prefix) :]).resolve())
    return tracking.uri


def connect(config: Config) -> str:
    """Point MLflow at the configured store and make sure the experiment exists; returns the URI."""
    import mlflow

    uri = tracking_uri(config.params.tracking, config.root)
    # MLflow exports the URI into os.environ; undo that so the user's own MLFLOW_TRACKING_URI (or its absence)
    # stays the only override, and a later connect() to another project is not captured by this one.
    exported = {key: os.environ.get(key) for key in _EXPORTED_ENV}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for key, value in exported.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    experiment = config.params.tracking.experiment
    if mlflow.get_experiment_by_name(experiment) is None:
        location = (config.root / config.params.tracking.artifact_location).resolve().as_uri()
        mlflow.create_experiment(experiment, artifact_location=location)
    mlflow.set_experiment(experiment)
    return uri


def decide_alias(
    challenger: float, champion: float | None, min_delta: float, champion_version: str | None
) -> AliasDecision:
    """Promote when there is no champion, or when the challenger is better by at least min_delta (a tie never wins)."""
    if champion is None:
        return AliasDecision(True, "no champion yet", challenger)
    delta = challenger - champion
    promote = delta > 0 and delta >= min_delta
    verb = "beats" if promote else "does not beat"
    reason = (
        f"challenger {challenger:.4f} {verb} champion v{champion_version} {champion:.4f} "
        f"(delta {delta:+.4f}, min_delta {min_delta})"
    )
    return AliasDecision(promote, reason, challenger, champion_version, champion)


def champion_version(model_name: str, alias: str) -> str | None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return str(MlflowClient().get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


def score_version(model_name: str, model_version: str, score: Callable[[Any], float]) -> float:
    """Re-score a registered version on today's held-out data, so both models are judged on the same rows."""
    import mlflow

    return score(mlflow.sklearn.load_model(f"models:/{model_name}/{model_version}"))


def git_state(root: Path) -> dict[str, str]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    commit = git("rev-parse", "HEAD") or "unknown"
    dirty = "true" if git("status", "--porcelain", "--untracked-files=no") else "false"
    return {"git.commit": commit, "git.dirty": dirty if commit != "unknown" else "unknown"}


def log_model_version(
    model: Any,
    *,
    model_name: str,
    input_example: pd.DataFrame,
    trusted_types: tuple[str, ...],
) -> str:
    """Log the pipeline as an MLflow model (skops, no pickle; pyfunc returns probabilities) and register it."""
    import mlflow
    from mlflow.models import infer_signature

    with warnings.catch_warnings():
        # MLflow hints that integer columns cannot hold missing values; the validation suite forbids them there.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            serialization_format="skops",
            skops_trusted_types=list(trusted_types),
            signature=infer_signature(input_example, model.predict_proba(input_example)),
            input_example=input_example,
            pyfunc_predict_fn="predict_proba",
            pip_requirements=[f"{package}=={version(package)}" for package in MODEL_REQUIREMENTS],
            registered_model_name=model_name,
        )
    return str(info.registered_model_version)


def set_alias(model_name: str, alias: str, model_version: str, decision: AliasDecision) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    client.set_model_version_tag(model_name, model_version, "optiflow.alias_decision", decision.reason)
    if decision.promote:
        client.set_registered_model_alias(model_name, alias, model_version)
