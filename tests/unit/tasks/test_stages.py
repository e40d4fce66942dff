"""One stage list: dvc.yaml is rendered from tasks/stages.py, the flow runs each stage's task through it, and no
stage reads a runtime group."""

from __future__ import annotations

import inspect

import pytest
import yaml

from flows.cli import main
from optiflow.config import RUNTIME_GROUPS, PathsParams, load_config
from tasks.stages import SOURCE, SOURCE_TREE, STAGES, StageSpec, render_dvc_yaml, task_for
from tests.conftest import REPO, shipped_params


def test_dvc_yaml_is_rendered_from_the_stage_list() -> None:
    rendered = render_dvc_yaml(load_config(REPO / "params.yaml", environ={}))
    assert (REPO / "dvc.yaml").read_text() == rendered, "run `optiflow dvc-yaml` and commit dvc.yaml"
    assert main(["dvc-yaml", "--check", "--params", str(REPO / "params.yaml"), "--output", str(REPO / "dvc.yaml")]) == 0


def test_dvc_yaml_names_the_effective_paths_and_templates_only_the_source() -> None:
    config = load_config(REPO / "params.yaml", {"paths.train": "data/elsewhere/train.parquet"}, environ={})
    rendered = render_dvc_yaml(config)
    assert "${paths." not in rendered and "${data.source}" in rendered
    stages = yaml.safe_load(rendered)["stages"]
    assert (
        "data/elsewhere/train.parquet" in stages["split"]["outs"]
        and "data/elsewhere/train.parquet" in (stages["tune"]["deps"])
    )


def test_each_stage_runs_the_task_of_its_own_shell_in_the_list_order() -> None:
    dvc_stages = list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    tasks = [task_for(spec) for spec in STAGES]
    assert [task.name for task in tasks] == [spec.name for spec in STAGES] == dvc_stages
    for spec, task in zip(STAGES, tasks, strict=True):  # the file whose code closure keys the stage's cache
        assert inspect.getsourcefile(task.fn) == str(SOURCE_TREE / spec.shell)


def test_stage_specs_name_real_files_keys_and_param_groups() -> None:
    groups = set(shipped_params())  # DVC fails when a group a stage lists is missing from params.yaml
    for spec in STAGES:
        assert set(spec.params) <= groups, spec.name
        for key in (*spec.deps, *spec.outs, *spec.metrics, *spec.plots):
            assert key == SOURCE or key in PathsParams.model_fields, (spec.name, key)
        for path in spec.code:
            assert (REPO / path).is_file(), (spec.name, path)


def test_every_stage_input_is_produced_upstream() -> None:
    produced = {SOURCE}
    for spec in STAGES:
        assert set(spec.deps) <= produced, (spec.name, set(spec.deps) - produced)
        produced |= {*spec.outs, *spec.metrics, *spec.plots}


def test_runtime_groups_are_no_stage_params_so_they_never_change_a_cache_key() -> None:
    for spec in STAGES:
        assert not set(spec.params) & set(RUNTIME_GROUPS), spec.name
    with pytest.raises(ValueError, match="runtime group"):
        StageSpec(name="tune", params=("tune", "orchestration"), deps=(), outs=())
    plain = load_config(REPO / "params.yaml", environ={}).params
    runtime = load_config(
        REPO / "params.yaml",
        {"orchestration.task_runner": "dask", "tracking.uri": "sqlite:///other.db", "score.workers": 8},
        environ={"OPTIFLOW_SERVE__PORT": "9000"},
    ).params
    for spec in STAGES:
        assert runtime.subset_hash(spec.params) == plain.subset_hash(spec.params), spec.name
