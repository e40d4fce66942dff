"""Batch scoring against a small registered model: same scores as the in-memory pyfunc, chunking-invariant,
bad rows rejected with reasons, tampered artifacts refused, and the prediction cache."""

from __future__ import annotations

import re
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from optiflow.config import Config
from optiflow.errors import ConfigError, DataError, IntegrityError
from optiflow.release.registry import LoadedModel, connect, load_registered
from optiflow.serving.batch import Scorer, read_chunks, rejects_path, score_file
from optiflow.serving.cache import PredictionCache
from tests.registered import register_model, registry_project, typed_frame

NAME = "optiflow-churn"


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory, churn_sample: pd.DataFrame) -> tuple[Config, pd.DataFrame]:
    config = registry_project(tmp_path_factory.mktemp("scoring"), churn_sample)
    version = register_model(config, typed_frame(config, churn_sample))
    MlflowClient().set_registered_model_alias(NAME, "champion", version)
    return config, churn_sample


@pytest.fixture
def champion(registered: tuple[Config, pd.DataFrame]) -> LoadedModel:
    connect(registered[0])
    return load_registered(NAME, alias="champion")


def _scorer(config: Config, loaded: LoadedModel, reasons: int = 0) -> Scorer:
    params = config.params
    return Scorer(loaded.model, loaded.spec, params.data, params.validation, loaded.name, loaded.version, reasons)


def _score(config: Config, loaded: LoadedModel, source: Path, output: Path, reasons: int = 0, cache=None, **score):
    params = config.params.score.model_copy(update=score)
    return score_file(source, output, _scorer(config, loaded, reasons), params, cache)


def test_scores_match_the_in_memory_pyfunc_exactly(registered, champion: LoadedModel, tmp_path: Path) -> None:
    config, sample = registered
    source = tmp_path / "input.csv"
    sample.drop(columns=["churn"]).to_csv(source, index=False)
    summary = _score(config, champion, source, tmp_path / "scores.parquet")
    assert (summary.rows_read, summary.rows_scored, summary.rows_rejected) == (1500, 1500, 0)

    pyfunc = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    served = pyfunc.predict(sample)  # raw rows as read, the target column included: natural input
    expected = served["probability"].to_numpy()
    scored = pd.read_parquet(tmp_path / "scores.parquet")
    assert scored["row"].tolist() == list(range(1500))
    np.testing.assert_array_equal(scored["probability"].to_numpy(), expected)
    labels = np.where(expected >= champion.spec.threshold, "Yes", "No")
    assert scored["label"].tolist() == labels.tolist() == served["label"].tolist()
    assert champion.spec.threshold == 0.4 and champion.tags["optiflow.artifacts.sha256"]


def test_chunk_size_and_workers_do_not_change_results(registered, champion: LoadedModel, tmp_path: Path) -> None:
    config, sample = registered
    source = tmp_path / "input.csv.gz"
    sample.head(150).to_csv(source, index=False)
    outputs = []
    for chunk_rows, workers in ((150, 1), (37, 3), (16, 2)):
        target = tmp_path / f"scores-{chunk_rows}.csv"
        summary = _score(config, champion, source, target, reasons=2, chunk_rows=chunk_rows, workers=workers)
        assert summary.chunks == -(-150 // chunk_rows)
        outputs.append(pd.read_csv(target))
    pd.testing.assert_frame_equal(outputs[0], outputs[1])
    pd.testing.assert_frame_equal(outputs[0], outputs[2])
    assert {"reason_1", "reason_2"} <= set(outputs[0].columns)
    assert outputs[0]["reason_1"].isin(champion.spec.features).mean() > 0.9


def test_parquet_input_reads_in_chunks_like_csv(registered, tmp_path: Path) -> None:
    _, sample = registered
    sample.head(250).to_parquet(tmp_path / "input.parquet", index=False)
    chunks = list(read_chunks(tmp_path / "input.parquet", 100))
    assert [len(chunk) for chunk in chunks] == [100, 100, 50]
    assert chunks[2].index[0] == 200


def test_bad_rows_go_to_rejects_with_reasons_while_good_rows_are_scored(
    registered, champion: LoadedModel, tmp_path: Path
) -> None:
    config, sample = registered
    frame = sample.head(50).drop(columns=["churn"]).astype({"tenure": object})
    frame.loc[3, "tenure"] = "ten"
    frame.loc[7, "contract"] = "Weekly"
    frame.loc[9, "monthly_charges"] = -5.0
    frame.loc[9, "senior_citizen"] = 7
    frame.loc[11, "payment_method"] = None
    source = tmp_path / "input.csv"
    frame.to_csv(source, index=False)
    summary = _score(config, champion, source, tmp_path / "scores.csv", chunk_rows=8)
    assert (summary.rows_scored, summary.rows_rejected) == (46, 4)
    rejects = pd.read_csv(rejects_path(tmp_path / "scores.csv")).set_index("row")["reason"].to_dict()
    assert rejects == {
        3: "tenure: not a number ('ten')",
        7: "contract: 'Weekly' not in the allowed values",
        9: "monthly_charges: -5.0 outside [0.0, 1000.0]; senior_citizen: '7.0' not in the allowed values",
        11: "payment_method: missing",
    }
    scored = pd.read_csv(tmp_path / "scores.csv")
    assert sorted(scored["row"]) == sorted(set(range(50)) - {3, 7, 9, 11})


def test_a_missing_column_stops_the_run_and_writes_nothing(registered, champion: LoadedModel, tmp_path: Path) -> None:
    config, sample = registered
    sample.head(20).drop(columns=["churn", "contract"]).to_csv(tmp_path / "input.csv", index=False)
    with pytest.raises(DataError, match=r"missing required column\(s\) \['contract'\]"):
        _score(config, champion, tmp_path / "input.csv", tmp_path / "scores.csv")
    assert not (tmp_path / "scores.csv").exists()


def test_cache_returns_identical_results_and_misses_after_a_new_version(
    registered, champion: LoadedModel, tmp_path: Path
) -> None:
    config, sample = registered
    source = tmp_path / "input.csv"
    sample.head(300).to_csv(source, index=False)
    cache = PredictionCache(tmp_path / "cache.sqlite")
    first = _score(config, champion, source, tmp_path / "first.csv", reasons=2, cache=cache, chunk_rows=64)
    second = _score(config, champion, source, tmp_path / "second.csv", reasons=2, cache=cache, chunk_rows=100)
    assert (first.cache_hits, first.cache_misses) == (0, 300)
    assert (second.cache_hits, second.cache_misses) == (300, 0)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "first.csv"), pd.read_csv(tmp_path / "second.csv"))

    newer = register_model(config, typed_frame(config, sample), family="hist_gradient_boosting", max_iter=20)
    loaded = load_registered(NAME, version=newer)
    third = _score(config, loaded, source, tmp_path / "third.csv", reasons=2, cache=cache)
    assert (third.cache_hits, third.cache_misses) == (0, 300)


def _stored_file(config: Config, version: str, name: str) -> Path:
    source = MlflowClient().get_model_version(NAME, version).source
    model_id = source.rsplit("/", 1)[-1]
    return next((config.root / config.params.tracking.artifact_location).rglob(f"{model_id}/artifacts/{name}"))


@pytest.mark.parametrize("change", ["edit", "add"])
def test_a_tampered_model_file_is_refused_before_loading(
    registered, tmp_path_factory: pytest.TempPathFactory, change: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, sample = registered
    connect(config)
    version = register_model(config, typed_frame(config, sample.sample(400, random_state=3)))
    if change == "edit":
        target = _stored_file(config, version, "data/optiflow/candidate/model.skops")
        target.write_bytes(target.read_bytes() + b"\0")
        expected = r"data/optiflow/candidate/model.skops: expected sha256 [0-9a-f]{64}, observed [0-9a-f]{64}"
    else:
        _stored_file(config, version, "MLmodel").with_name("extra.py").write_text("import os\n")
        expected = r"extra.py: not in the registry record"

    def must_not_load(*args, **kwargs):
        raise AssertionError("load_candidate was called on unverified files")

    monkeypatch.setattr("optiflow.release.pyfunc_model.load_candidate", must_not_load)
    with pytest.raises(IntegrityError, match=expected):
        load_registered(NAME, version=version)


def test_device_choice_moves_only_models_that_can_move(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from optiflow.modeling.mlp import resolve_device
    from optiflow.serving import batch as scoring

    class Movable:
        device = None

        def to(self, device: str) -> None:
            self.device = device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    movable = Movable()
    assert scoring.place_on_device(movable, "auto") == "cuda" and movable.device == "cuda"
    assert scoring.place_on_device(object(), "cuda") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert scoring.place_on_device(movable, "cuda") == "cpu" and movable.device == "cpu"  # scoring falls back
    with pytest.raises(ConfigError, match=r"train\.device is 'cuda'"):
        resolve_device("cuda")  # training refuses


def test_rejects_are_named_from_the_whole_output_name() -> None:
    assert rejects_path(Path("out/scores.jan.csv")) == Path("out/scores.jan.rejects.csv")
    assert rejects_path(Path("out/scores.feb.csv")) == Path("out/scores.feb.rejects.csv")
    assert rejects_path(Path("scores.parquet")) == Path("scores.rejects.csv")
    assert rejects_path(Path("scores")) == Path("scores.rejects.csv")


def test_outputs_never_replace_the_input_or_a_kept_file_without_force(tmp_path: Path) -> None:
    import subprocess

    from optiflow.config import load_config
    from optiflow.serving.batch import check_targets
    from tests.conftest import make_project

    config = load_config(make_project(tmp_path))
    (tmp_path / "notes.csv").write_text("a\n")
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw.dvc").write_text("outs: []\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "add", "notes.csv"], cwd=tmp_path, check=True)
    source = tmp_path / "in.csv"
    refused = {
        source: "--output would replace the input file",
        tmp_path / "notes.csv": "would replace a file tracked by git",
        tmp_path / "raw" / "x.csv": "would replace a DVC-tracked file",
        tmp_path / "models" / "candidates" / "x.csv": "a pipeline file (paths.candidates = models/candidates)",
        tmp_path / ".git" / "config": "a project file (.git)",
    }
    for output, message in refused.items():
        with pytest.raises(DataError, match=re.escape(message)):
            check_targets(config, source, output)
        check_targets(config, source, output, force=True)
    check_targets(config, source, tmp_path / "reports" / "predictions.csv")
    check_targets(config, source, tmp_path.parent / "elsewhere.csv")


def test_duplicate_column_names_stop_scoring_naming_them(tmp_path: Path) -> None:
    (tmp_path / "dup.csv").write_text("tenure,contract,tenure\n1,a,2\n")
    with pytest.raises(DataError, match=re.escape("dup.csv: column name(s) ['tenure'] appear more than once")):
        list(read_chunks(tmp_path / "dup.csv", 10))
