"""Every deployment `make serve` creates (flows/deployments.py) completes a run made with its own parameters, the way
a schedule starts it: on a fresh project (nothing trained, no batch yet) and on the session's trained project."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from flows.deployments import deployments
from flows.monitoring import monitoring
from flows.release import release
from flows.scoring import scoring
from flows.training import training
from tests.conftest import copy_trained, make_project

pytestmark = pytest.mark.usefixtures("prefect_api")  # flows run on one temporary Prefect API

FLOWS = {"training": training, "monitoring": monitoring, "scoring": scoring, "release": release}


def _scheduled_run(params: Path, name: str) -> Any:
    """The final state of a run of deployment ``name`` with the deployment's parameters, as its schedule starts it."""
    (deployment,) = [d for d in deployments(str(params)) if d.name == name]
    assert deployment.schedules, f"deployment {name} has no schedule"
    return FLOWS[name](**deployment.parameters, return_state=True)


def _artifacts(state: Any) -> dict[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    run = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]))
    with get_client(sync_client=True) as client:
        return {artifact.key: artifact.data for artifact in client.read_artifacts(artifact_filter=run)}


def test_every_deployment_has_a_flow_here() -> None:
    assert sorted(d.name for d in deployments()) == sorted(FLOWS)


@pytest.mark.parametrize("name", ["monitoring", "scoring"])
def test_a_scheduled_run_on_a_fresh_project_completes_saying_there_is_nothing_new(
    name: str, tmp_path: Path, churn_sample: pd.DataFrame
) -> None:
    params = make_project(tmp_path, churn_sample)  # fresh: never trained, no data/batches folder
    state = _scheduled_run(params, name)
    assert state.is_completed() and state.result() == []
    note = _artifacts(state)[f"{name}-no-new-batches"]
    assert "no new batches in data/batches" in note
    assert not (tmp_path / "data/batches").exists() and not (tmp_path / "mlflow.db").exists()


def test_a_scheduled_release_run_on_a_fresh_project_completes_with_nothing_to_review(
    tmp_path: Path, churn_sample: pd.DataFrame
) -> None:
    state = _scheduled_run(make_project(tmp_path, churn_sample), "release")
    assert state.is_completed() and state.result() == {"action": "keep", "reason": "nothing is registered yet"}
    assert not (tmp_path / "mlflow.db").exists()


def test_the_training_deployment_trains_a_fresh_project(flow_training: tuple[Path, list[dict[str, Any]]]) -> None:
    """The session's project was trained by the training flow called exactly as the deployment calls it."""
    params, results = flow_training
    (deployment,) = [d for d in deployments(str(params)) if d.name == "training"]
    assert deployment.parameters == {"params_path": str(params.resolve())} and deployment.schedules
    assert results[-1]["stage"] == "register" and results[-1]["decision"]["outcome"] == "promoted"


def test_the_scheduled_scoring_run_scores_each_new_batch_once(
    trained_project: Path, tmp_path: Path, churn_sample: pd.DataFrame
) -> None:
    params = copy_trained(trained_project, tmp_path / "project")
    root = params.parent
    (root / "data/batches").mkdir()
    churn_sample.drop(columns=["churn"]).head(200).to_csv(root / "data/batches/001-monday.csv", index=False)

    first = _scheduled_run(params, "scoring")
    assert first.is_completed()
    (summary,) = first.result()
    assert (summary["rows_scored"], summary["rows_rejected"]) == (200, 0)
    scored = pd.read_csv(root / "data/scored/001-monday.csv")
    assert len(scored) == 200 and {"probability", "label"} <= set(scored.columns)

    again = _scheduled_run(params, "scoring")
    assert again.is_completed() and again.result() == []
    assert "no new batches in data/batches" in _artifacts(again)["scoring-no-new-batches"]

    monitored = _scheduled_run(params, "monitoring")  # an unlabelled batch: drift is checked, nothing retrains
    assert monitored.is_completed() and [row["batch_id"] for row in monitored.result()] == ["001-monday"]
