"""The settings: the shipped params.yaml is valid and short, every mistake is named, runtime settings come from
runtime.yaml and the environment (never params.yaml), `config show` says where each value came from, and the JSON
Schema and docs/configuration.md are generated from the schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from flows.cli import main
from optiflow.config import RUNTIME_GROUPS, Params, apply_overrides, load_config, parse_params, resolve_settings
from optiflow.config.reference import json_schema, render_docs
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
        (lambda p: p.update(paths={"dataset": "../../outside.parquet"}), "paths.dataset: must be a path inside"),
        (lambda p: p.update(paths={"candidates": "/etc/models"}), "paths.candidates: must be a path inside"),
        (lambda p: p["tune"].update(n_trials=10**9), "tune.n_trials: Input should be less than or equal to 10000"),
        (lambda p: p["tune"].update(n_jobs=10**6), "tune.n_jobs: Input should be less than or equal to 256"),
        (lambda p: p.update(score={"chunk_rows": 10**12}), "score.chunk_rows: Input should be less than or equal"),
        (lambda p: p.update(serve={"max_batch_size": 10**9}), "serve.max_batch_size: Input should be less than"),
        (lambda p: p.update(orchestration={"dask_workers": 10**5}), "orchestration.dask_workers: Input should be"),
        (lambda p: p.update(serve={"api_keys_sha256": ["plain-key"]}), "not 64 lowercase hex characters"),
        (lambda p: p.update(serve={"trusted_proxies": ["proxy.corp"]}), "'proxy.corp' is not an IP address"),
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
            lambda p: p["tune"].update(spaces={"mlp": {"depth": {"type": "int", "low": 1, "high": 3}}}),
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


def test_shipped_params_yaml_is_short_and_leaves_runtime_groups_and_paths_to_the_defaults() -> None:
    text = (REPO / "params.yaml").read_text()
    assert len(text.splitlines()) < 150
    assert not set(shipped_params()) & {*RUNTIME_GROUPS, "paths"}
    config = load_config(REPO / "params.yaml", environ={})
    assert config.params.tune.spaces["mlp"]["hidden_units"].high == 128  # the search spaces are schema defaults
    assert config.path("prediction_cache") == REPO / "cache/predictions.sqlite"


# --- runtime settings: schema default < runtime.yaml < OPTIFLOW_<GROUP>__<KEY> < -S -------------------------------


def project(tmp_path: Path, runtime: str | None = None, **groups: dict) -> Path:
    """The shipped params.yaml (plus ``groups``) and an optional runtime.yaml in ``tmp_path``."""
    raw = {**shipped_params(), **groups}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    if runtime is not None:
        (tmp_path / "runtime.yaml").write_text(runtime)
    return tmp_path / "params.yaml"


def test_runtime_settings_precedence(tmp_path: Path) -> None:
    params = project(tmp_path)
    assert load_config(params, environ={}).params.serve.port == 8000
    project(tmp_path, "serve:\n  port: 8100\n  host: 0.0.0.0\n")
    assert load_config(params, environ={}).params.serve.port == 8100
    env = {"OPTIFLOW_SERVE__PORT": "9000", "OPTIFLOW_ORCHESTRATION__DASK_ADDRESS": "null", "OPTIFLOW_STACK_DIR": "x"}
    from_env = load_config(params, environ=env).params
    assert (from_env.serve.port, from_env.serve.host, from_env.orchestration.dask_address) == (9000, "0.0.0.0", None)
    overridden = load_config(params, {"serve.port": "9100"}, environ=env).params
    assert overridden.serve.port == 9100 and overridden.serve.host == "0.0.0.0"


def test_runtime_settings_leave_the_results_settings_alone(tmp_path: Path) -> None:
    plain = load_config(project(tmp_path), environ={}).params
    project(tmp_path, "tracking:\n  experiment: elsewhere\nscore:\n  workers: 8\n")
    env = {"OPTIFLOW_ORCHESTRATION__TASK_RUNNER": "dask", "OPTIFLOW_SERVE__PORT": "9000"}
    runtime = load_config(tmp_path / "params.yaml", environ=env).params
    results_groups = tuple(group for group in plain.model_dump(by_alias=True) if group not in RUNTIME_GROUPS)
    assert runtime.subset_hash(results_groups) == plain.subset_hash(results_groups)
    assert runtime.orchestration.task_runner == "dask" and runtime.tracking.experiment == "elsewhere"


@pytest.mark.parametrize("group", RUNTIME_GROUPS)
def test_a_runtime_group_in_params_yaml_is_refused_and_told_where_it_belongs(tmp_path: Path, group: str) -> None:
    with pytest.raises(ConfigError, match=f"`{group}:` is a runtime group") as error:
        load_config(project(tmp_path, **{group: {}}), environ={})
    assert "runtime.yaml" in str(error.value) and f"OPTIFLOW_{group.upper()}__<KEY>" in str(error.value)


def test_runtime_yaml_holds_runtime_groups_only(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"runtime\.yaml: `tune:` is not a runtime group"):
        load_config(project(tmp_path, "tune:\n  n_trials: 5\n"), environ={})
    with pytest.raises(ConfigError, match=r"runtime\.yaml: not valid YAML"):
        load_config(project(tmp_path, "serve: [unclosed\n"), environ={})
    with pytest.raises(
        ConfigError,
        match=r"^runtime\.yaml is invalid:\n  serve\.prot: unknown key; did you mean 'port'\? .*\[set by runtime\.y",
    ):
        load_config(project(tmp_path, "serve:\n  prot: 1\n"), environ={})
    assert load_config(project(tmp_path, ""), environ={}).params.serve.port == 8000  # an empty file is fine


def test_environment_settings_are_runtime_only_and_errors_name_the_variable(tmp_path: Path) -> None:
    params = project(tmp_path)
    with pytest.raises(ConfigError, match="OPTIFLOW_TUNE__N_TRIALS: `tune` is not a runtime group"):
        load_config(params, environ={"OPTIFLOW_TUNE__N_TRIALS": "5"})
    with pytest.raises(ConfigError, match=r"serve\.port: .*\[set by env OPTIFLOW_SERVE__PORT\]"):
        load_config(params, environ={"OPTIFLOW_SERVE__PORT": "many"})


def test_a_password_in_the_tracking_uri_is_refused_from_any_source(tmp_path: Path) -> None:
    uri = "postgresql://optiflow:hunter2@db:5432/mlflow"
    params = project(tmp_path)
    for environ, overrides in (({"OPTIFLOW_TRACKING__URI": uri}, {}), ({}, {"tracking.uri": uri})):
        with pytest.raises(ConfigError, match="contains a password") as error:
            load_config(params, overrides, environ=environ)
        assert "hunter2" not in str(error.value)
    project(tmp_path, f"tracking:\n  uri: {uri}\n")
    with pytest.raises(ConfigError, match="contains a password"):
        load_config(params, environ={})


# --- optiflow config show | schema | docs ---------------------------------------------------------------------------


def test_resolved_settings_say_where_each_value_came_from(tmp_path: Path) -> None:
    params = project(tmp_path, "serve:\n  host: 0.0.0.0\n")
    resolved = resolve_settings(params, {"split.test_size": "0.3"}, environ={"OPTIFLOW_SERVE__PORT": "9000"})
    origins = {setting.dotted: setting.origin for setting in resolved.settings}
    assert origins["seed"] == "params.yaml" and origins["data.target"] == "params.yaml"
    assert origins["split.test_size"] == "-S" and origins["split.reference_rows"] == "default"
    assert origins["serve.host"] == "runtime.yaml" and origins["serve.port"] == "env OPTIFLOW_SERVE__PORT"
    assert origins["paths.dataset"] == "default" and origins["tune.spaces.mlp.dropout.high"] == "default"
    values = {setting.dotted: setting.value for setting in resolved.settings}
    assert values["split.test_size"] == 0.3 and values["serve.port"] == 9000


def test_config_show_prints_every_value_with_its_origin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    params = project(tmp_path, "tracking:\n  experiment: mine\n")
    monkeypatch.setenv("OPTIFLOW_SERVE__PORT", "9000")
    assert main(["config", "show", "--params", str(params), "-S", "split.test_size=0.3"]) == 0
    lines = [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()]
    for expected in (
        "seed: 42 # params.yaml",
        "test_size: 0.3 # -S",
        "reference_rows: 1000 # default",
        "port: 9000 # env OPTIFLOW_SERVE__PORT",
        "experiment: mine # runtime.yaml",
        "dataset: data/interim/dataset.parquet # default",
        "hidden_units: {type: int, low: 16, high: 128, log: true, choices: null} # default",
    ):
        assert expected in lines, expected
    assert "paths:" in lines and "serve:" in lines


def test_config_show_names_a_bad_setting(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    params = project(tmp_path, tracking={"uri": "sqlite:///mlflow.db"})
    assert main(["config", "show", "--params", str(params)]) == 2
    assert "`tracking:` is a runtime group" in capsys.readouterr().err


def _properties(schema: dict) -> list[tuple[str, dict]]:
    found = [("Params", schema), *schema["$defs"].items()]
    return [(f"{name}.{key}", spec) for name, model in found for key, spec in model.get("properties", {}).items()]


def test_json_schema_describes_every_field(tmp_path: Path) -> None:
    schema = json_schema()
    properties = _properties(schema)
    assert len(properties) > 150
    assert [name for name, spec in properties if not spec.get("description")] == []
    assert set(schema["properties"]) == {field.alias or name for name, field in Params.model_fields.items()}
    assert main(["config", "schema", "--output", str(tmp_path / "schema.json")]) == 0
    assert json.loads((tmp_path / "schema.json").read_text()) == schema


def test_docs_configuration_md_is_current(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = REPO / "docs" / "configuration.md"
    assert docs.read_text() == render_docs(), "run `optiflow docs` and commit docs/configuration.md"
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text((REPO / "README.md").read_text())
    (tmp_path / "docs" / "configuration.md").write_text(docs.read_text().replace("Seeds every", "Seeds some"))
    monkeypatch.chdir(tmp_path)
    assert main(["docs", "--check"]) == 2
    assert main(["docs"]) == 0 and (tmp_path / "docs" / "configuration.md").read_text() == render_docs()


def test_docs_have_a_section_and_a_row_per_setting() -> None:
    docs = render_docs()
    for name, field in Params.model_fields.items():
        assert f"\n## {field.alias or name}\n" in docs
    for key in ("`source`", "`distill.temperature`", "`feature_types.numeric`", "`port`", "`prediction_cache`"):
        assert f"| {key} |" in docs, key


def test_an_unknown_key_gets_the_closest_known_one_and_the_source_that_set_it(tmp_path: Path) -> None:
    """A typo in -S is the override's fault, not params.yaml's; nested keys and keys under a column are suggested."""
    params = project(tmp_path)
    with pytest.raises(ConfigError) as error:
        load_config(params, {"split.tset_size": 0.3, "robustness.bounds.tenure.relativ": 0.1}, environ={})
    message = str(error.value)
    assert message.startswith("-S override is invalid:\n") and "params.yaml" not in message.splitlines()[0]
    assert "split.tset_size: unknown key; did you mean 'test_size'?" in message
    assert "robustness.bounds.tenure.relativ: unknown key; did you mean 'relative'?" in message
    with pytest.raises(ConfigError, match=r"valdiate: unknown key; did you mean 'validate'\?"):
        load_config(params, {"valdiate.min_rows": 3}, environ={})
    with pytest.raises(ConfigError, match=r"split\.zzz: unknown key \(see"):  # nothing close: no guess
        load_config(params, {"split.zzz": 3}, environ={})


def test_backtest_settings_name_every_unknown_scenario_and_policy_and_keep_the_shift_inside() -> None:
    from pydantic import ValidationError

    from optiflow.config import BacktestParams

    with pytest.raises(ValidationError) as bad:
        BacktestParams(scenarios=("control", "earthquake"), policies=("never", "sometimes"))
    text = str(bad.value)
    assert "earthquake" in text and "sometimes" in text and "'sudden_covariate'" in text
    with pytest.raises(ValidationError, match="shift_at 60 must lie inside the 60 batches"):
        BacktestParams(shift_at=60)
