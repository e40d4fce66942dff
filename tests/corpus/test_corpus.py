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

from optiflow.config import load_config
from optiflow.ingest import load_dataset, resolve_schema
from optiflow.io import read_json, read_parquet
from optiflow.models import load_candidate
from optiflow.validation import validate_frame
from tasks.ingest import ingest
from tests.conftest import output_digests, registry_state
from tests.corpus.cases import CASES, Case

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
    before = output_digests(root)
    bad = case.write(root, churn_sample)

    with pytest.raises(case.error) as raised:
        if case.entry == "config":
            load_config(bad.params)
        else:
            ingest.fn(load_config(bad.params))

    message = str(raised.value)
    for fragment in case.fragments:
        assert fragment in message, f"{case.name}: {fragment!r} not in:\n{message}"
    if bad.source is not None:
        assert Path(bad.source).name in message, message
    assert output_digests(root) == before


def test_extra_columns_are_dropped_from_the_published_dataset(trained_copy: Path, churn_sample: pd.DataFrame) -> None:
    bad = SAFE_CASES["extra-column"].write(trained_copy.parent, churn_sample)
    config = load_config(bad.params)
    ingest.fn(config)
    published = read_parquet(config.path("dataset"))
    assert "notes" not in published.columns and "churn_score_v2" not in published.columns
    assert set(published.columns) == set(churn_sample.columns)


def _champion_candidate(params: Path):
    config = load_config(params)
    selected = read_json(config.path("metrics"))["selected"]
    return config, load_candidate(config.path("candidates") / selected)[0]


def _batch(case: str, root: Path, sample: pd.DataFrame) -> tuple[pd.DataFrame, object]:
    bad = SAFE_CASES[case].write(root, sample)
    config = load_config(bad.params)
    frame, _ = load_dataset(config.source, config.params.data)
    return frame, config


def test_unseen_category_at_scoring_is_scored_and_named_by_the_suite(
    trained_copy: Path, churn_sample: pd.DataFrame
) -> None:
    config, model = _champion_candidate(trained_copy)
    batch, batch_config = _batch("unseen-category-at-scoring", trained_copy.parent, churn_sample)
    features = batch.drop(columns=[config.params.data.target])
    probabilities = model.predict_proba(features)[:, 1]
    assert np.isfinite(probabilities).all() and ((probabilities >= 0) & (probabilities <= 1)).all()
    data = batch_config.params.data
    report = validate_frame(batch, resolve_schema(batch, data), data, batch_config.params.validation, data.source)
    failed = {(c.column, c.expectation): c.observed for c in report.failures}
    assert "Quarterly" in failed[("contract", "expect_column_values_to_be_in_set")]


def test_a_batch_ten_times_larger_than_training_scores_row_for_row_the_same(
    trained_copy: Path, churn_sample: pd.DataFrame
) -> None:
    config, model = _champion_candidate(trained_copy)
    batch, _ = _batch("batch-10x-larger", trained_copy.parent, churn_sample)
    features = batch.drop(columns=[config.params.data.target])
    assert len(features) == 10 * len(churn_sample)
    single = model.predict_proba(features.head(len(churn_sample)))[:, 1]
    np.testing.assert_allclose(model.predict_proba(features)[:, 1], np.tile(single, 10), rtol=0, atol=1e-12)


CLI_CASES = ("truncated-gzip", "params-yaml-syntax")  # every case shares the CLI path; these two cover it


@pytest.mark.slow
@pytest.mark.parametrize("name", CLI_CASES)  # `train` with bad input: tests/flows/test_training_flow.py (Prefect)
def test_cli_exits_2_with_the_message_and_no_traceback(
    name: str, trained_copy: Path, churn_sample: pd.DataFrame
) -> None:
    root = trained_copy.parent
    case = next(case for case in CASES if case.name == name)
    before, registry = output_digests(root), registry_state(trained_copy)
    bad = case.write(root, churn_sample)

    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "stage", "ingest", "--params", str(bad.params)],
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
