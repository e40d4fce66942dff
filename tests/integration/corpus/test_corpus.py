"""Every bad input in the corpus ends in a clear error (or its documented safe handling) and moves nothing:
outputs, the validated dataset, mlflow.db, model artifacts and the champion alias are byte-for-byte as before."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from optiflow.data.ingest import coerce
from optiflow.data.keys import KEY_COLUMN
from optiflow.io import read_parquet
from optiflow.preflight import load_settings, load_settings_for_data
from optiflow.release.registry import connect, load_registered
from optiflow.serving.batch import rejects_path, score_batch
from tasks.ingest import ingest
from tests.conftest import output_digests, registry_state
from tests.integration.corpus.cases import CASES, Case, frame_case

ERROR_CASES = [case for case in CASES if case.error is not None]
SAFE_CASES = {case.name: case for case in CASES if case.error is None}


def test_the_corpus_is_big_enough_and_names_are_unique() -> None:
    assert len(ERROR_CASES) >= 25
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", ERROR_CASES, ids=lambda case: case.name)
def test_bad_input_raises_a_clear_error_and_changes_nothing(
    case: Case, trained_copy: Path, churn_sample: pd.DataFrame
) -> None:
    root = trained_copy.parent
    before, registry = output_digests(root), registry_state(trained_copy)
    bad = case.write(root, churn_sample)
    scores = root.parent / "scores"
    output = root / bad.output if bad.output else scores / "scores.csv"
    kept = {path: path.read_bytes() for path in (root / "params.yaml", root / (bad.source or "")) if path.is_file()}

    with pytest.raises(case.error) as raised:
        if case.entry == "config":
            load_settings(bad.params, bad.overrides)
        elif case.entry == "columns":
            load_settings_for_data(bad.params, bad.overrides)
        elif case.entry == "score":
            score_batch(load_settings(bad.params, bad.overrides), root / bad.source, output)
        else:
            ingest.fn(load_settings(bad.params, bad.overrides))

    message = str(raised.value)
    for fragment in case.fragments:
        assert fragment in message, f"{case.name}: {fragment!r} not in:\n{message}"
    for secret in case.hidden:
        assert secret not in message, f"{case.name}: {secret!r} shown in:\n{message}"
    if bad.source is not None:
        assert Path(bad.output or bad.source).name in message, message
    assert output_digests(root) == before and registry_state(trained_copy) == registry
    assert all(path.read_bytes() == content for path, content in kept.items())  # params.yaml and the input too
    assert not scores.exists() or not any(scores.iterdir())  # no output, no rejects, no temporary file
    assert not [path for path in root.rglob(".*.tmp")]


def test_ignored_columns_are_dropped_from_the_published_dataset(trained_copy: Path, churn_sample: pd.DataFrame) -> None:
    bad = SAFE_CASES["ignored-column"].write(trained_copy.parent, churn_sample)
    config = load_settings(bad.params, bad.overrides)
    ingest.fn(config)
    published = read_parquet(config.path("dataset"))
    assert "notes" not in published.columns and "churn_score_v2" not in published.columns
    assert set(published.columns) == {*churn_sample.columns, KEY_COLUMN}  # the row key: which rows each decision used


SCORE_CASES = [case for case in SAFE_CASES.values() if case.entry == "score"]


@pytest.mark.parametrize("case", SCORE_CASES, ids=lambda case: case.name)
def test_a_bad_batch_is_scored_as_documented_and_changes_nothing(
    case: Case, trained_copy: Path, churn_sample: pd.DataFrame, tmp_path: Path
) -> None:
    """Bad rows go to the rejects file with their reason, every other row is scored exactly as one in-memory
    predict_proba of the champion on the clean rows, and the registry, champion and artifacts do not move."""
    root = trained_copy.parent
    before, registry = output_digests(root), registry_state(trained_copy)
    bad = case.write(root, churn_sample)
    expected = case.scored(churn_sample)
    config = load_settings(bad.params, bad.overrides)
    output = tmp_path / "scores" / "scores.csv"

    summary = score_batch(config, root / bad.source, output)

    rejects = pd.read_csv(rejects_path(output), dtype={"reason": str}).set_index("row")["reason"].to_dict()
    assert rejects == expected.rejects
    kept = [row for row in range(len(expected.seen)) if row not in expected.rejects]
    scored = pd.read_csv(output)
    assert scored["row"].tolist() == kept
    assert (summary.rows_read, summary.rows_scored, summary.rows_rejected, summary.chunks) == (
        len(expected.seen),
        len(kept),
        len(expected.rejects),
        expected.chunks,
    )
    connect(config)
    champion = load_registered(  # on the runtime scoring used (score.runtime: the ONNX graph when its parity held)
        config.params.registry.model_name,
        alias=config.params.registry.champion_alias,
        runtime=config.params.score.runtime,
    )
    typed = coerce(expected.seen, config.params.data, Path("seen"))[list(champion.spec.features)]
    in_memory = champion.model.predict_proba(typed)[:, 1]  # every row in one call
    np.testing.assert_allclose(scored["probability"].to_numpy(), in_memory[kept], rtol=0, atol=1e-12)
    labels = np.where(in_memory[kept] >= champion.spec.threshold, "Yes", "No")
    assert scored["label"].tolist() == labels.tolist()
    assert output_digests(root) == before and registry_state(trained_copy) == registry


def test_infinity_in_a_column_without_a_range_is_rejected_at_scoring(
    trained_copy: Path, churn_sample: pd.DataFrame, tmp_path: Path
) -> None:
    def infinite_charges(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.drop(columns=["churn"]).assign(
            total_charges=frame["total_charges"].where(frame.index >= 2, np.inf)
        )

    root = trained_copy.parent
    bad = frame_case("inf-without-range-at-scoring", infinite_charges, **{"validate.ranges": {}})(root, churn_sample)
    output = tmp_path / "scores.csv"
    summary = score_batch(load_settings(bad.params, bad.overrides), root / bad.source, output)
    rejects = pd.read_csv(rejects_path(output)).set_index("row")["reason"].to_dict()
    assert summary.rows_scored == len(churn_sample) - 2
    assert sorted(rejects) == [0, 1]
    assert all("total_charges" in reason and "inf" in reason for reason in rejects.values())


CLI_CASES = ("truncated-gzip", "params-yaml-syntax")  # every case shares the CLI path; these two cover it


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", CLI_CASES
)  # `train` with bad input: tests/integration/flows/test_training_flow.py (Prefect)
def test_cli_exits_2_with_the_message_and_no_traceback(
    name: str, trained_copy: Path, churn_sample: pd.DataFrame
) -> None:
    root = trained_copy.parent
    case = next(case for case in CASES if case.name == name)
    before, registry = output_digests(root), registry_state(trained_copy)
    bad = case.write(root, churn_sample)

    done = subprocess.run(
        [sys.executable, "-m", "flows", "stage", "ingest", "--params", str(bad.params)],
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 2, done.stderr[-3000:]
    assert "optiflow: error:" in done.stderr and "Traceback" not in done.stderr, done.stderr[-3000:]
    for fragment in case.fragments:
        assert fragment in done.stderr
    assert output_digests(root) == before and registry_state(trained_copy) == registry


def test_two_outputs_in_one_folder_keep_their_own_rejects(
    trained_copy: Path, churn_sample: pd.DataFrame, tmp_path: Path
) -> None:
    """scores.jan.csv and scores.feb.csv used to share scores.rejects.csv: the second run replaced the first's."""
    root = trained_copy.parent
    config = load_settings(trained_copy)
    month = {"jan": 3, "feb": 5}
    for name, bad_rows in month.items():
        batch = churn_sample.drop(columns=["churn"]).astype({"contract": object})
        batch.loc[: bad_rows - 1, "contract"] = "Quarterly"
        batch.to_csv(root / "data" / f"{name}.csv", index=False)
        score_batch(config, root / "data" / f"{name}.csv", tmp_path / f"scores.{name}.csv")
    for name, bad_rows in month.items():
        assert len(pd.read_csv(tmp_path / f"scores.{name}.rejects.csv")) == bad_rows
