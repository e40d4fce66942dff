"""One stage list: dvc.yaml is rendered from tasks/stages.py, and the flow runs each stage's task through it."""

from __future__ import annotations

import inspect

import yaml

from optiflow.config import PathsParams
from tasks.stages import SOURCE, SOURCE_TREE, STAGES, render_dvc_yaml, task_for
from tests.conftest import REPO, shipped_params


def test_dvc_yaml_is_rendered_from_the_stage_list() -> None:
    assert (REPO / "dvc.yaml").read_text() == render_dvc_yaml(), "run `optiflow dvc-yaml` and commit dvc.yaml"


def test_each_stage_runs_the_task_of_its_own_shell_in_the_list_order() -> None:
    dvc_stages = list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    tasks = [task_for(spec) for spec in STAGES]
    assert [task.name for task in tasks] == [spec.name for spec in STAGES] == dvc_stages
    for spec, task in zip(STAGES, tasks, strict=True):  # the file whose code closure keys the stage's cache
        assert inspect.getsourcefile(task.fn) == str(SOURCE_TREE / spec.shell)


def test_stage_specs_name_real_files_keys_and_param_groups() -> None:
    groups = set(shipped_params())
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
