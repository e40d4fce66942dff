"""params.yaml parsing: the shipped file is valid and every mistake is named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from optiflow.config import apply_overrides, load_config, parse_params
from optiflow.errors import ConfigError
from optiflow.modeling.families import check_settings
from tests.conftest import REPO, shipped_params


def test_shipped_params_parse_and_resolve_paths() -> None:
    config = load_config(REPO / "params.yaml")
    assert config.root == REPO
    assert config.params.data.target == "churn"
    assert config.path("dataset") == REPO / "data/interim/dataset.parquet"
    assert config.source.is_file()


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda p: p["split"].update(tset_size=0.3), "split.tset_size: unknown key"),
        (lambda p: p.update(sed=1), "sed: unknown key"),
        (lambda p: p["split"].update(test_size="a lot"), "split.test_size"),
        (lambda p: p["split"].update(test_size=1.5), "split.test_size"),
        (lambda p: p["validate"]["ranges"].update(tenure=[10, 1]), "low 10.0 > high 1.0"),
        (lambda p: p["data"].update(negative_label="Yes"), "must differ"),
        (lambda p: p["data"].pop("target"), "data.target: Field required"),
        (lambda p: p["evaluate"].update(primary_metric="auc"), "evaluate.primary_metric"),
    ],
)
def test_invalid_params_name_the_key(change, named: str) -> None:
    raw = shipped_params()
    change(raw)
    with pytest.raises(ConfigError) as error:
        parse_params(raw)
    assert named in str(error.value)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda p: p["train"]["families"].update(forest={}), "train.families.forest: unknown model family 'forest'"),
        (lambda p: p["train"]["families"]["logistic_regression"].update(Cee=1), "unknown hyperparameter(s) ['Cee']"),
        (lambda p: p["train"]["families"]["logistic_regression"].update(C=-1), "train.families.logistic_regression"),
        (
            lambda p: p["tune"]["spaces"]["mlp"].update(depth={"type": "int", "low": 1, "high": 3}),
            "tune.spaces.mlp.depth",
        ),
    ],
)
def test_model_settings_are_checked_against_the_estimators(change, named: str) -> None:
    raw = shipped_params()
    change(raw)
    with pytest.raises(ConfigError) as error:
        check_settings(parse_params(raw))
    assert named in str(error.value)


def test_all_problems_reported_at_once() -> None:
    raw = shipped_params()
    raw["split"]["tset_size"] = 0.3
    raw["evaluate"]["threshold"] = 2
    with pytest.raises(ConfigError) as error:
        parse_params(raw)
    assert "split.tset_size" in str(error.value) and "evaluate.threshold" in str(error.value)


def test_overrides_set_dotted_keys_and_parse_yaml_scalars() -> None:
    raw = apply_overrides(shipped_params(), {"split.test_size": "0.25", "train.families.logistic_regression.C": 3})
    params = parse_params(raw)
    assert params.split.test_size == 0.25
    assert params.train.families["logistic_regression"]["C"] == 3


def test_override_of_unknown_key_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"split\.shuffle"):
        parse_params(apply_overrides(shipped_params(), {"split.shuffle": "true"}))


def test_missing_or_malformed_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="params file not found"):
        load_config(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(tmp_path / "params.yaml")


def test_subset_hash_changes_only_with_the_named_groups() -> None:
    base = parse_params(shipped_params())
    changed = parse_params(apply_overrides(shipped_params(), {"split.test_size": 0.3}))
    assert base.subset_hash(("data", "train")) == changed.subset_hash(("data", "train"))
    assert base.subset_hash(("split",)) != changed.subset_hash(("split",))
