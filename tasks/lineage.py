"""The one record of what each stage produced from what, shared by the Prefect flow and `dvc repro`.

Per stage, a stamp (``.optiflow/stages/NAME.json``): the key of the inputs its outputs on disk were made from
(dependency contents + the params it reads: ``stage_key``), the digest of those outputs, and the stage's result. Both
paths write it when a stage completes (the flow in ``run_stage``, `dvc repro` through `optiflow stage NAME`), both
hold the training lock while a stage runs, and both refuse a stage whose inputs the record says were made for other
inputs (another run with other settings wrote them meanwhile). The Prefect cache trusts outputs only while their
stamp matches, and takes the result from the stamp when DVC made them, so a flow after `dvc repro` is all cached.

In a DVC project whose dvc.yaml and params.yaml describe the run, the flow also commits each completed stage to
dvc.lock (``Repo.commit(stage, force=True)``: the hashes of the deps, params and outs now on disk), so `dvc status`
is clean and `dvc repro` is a no-op after `optiflow train`. That is sound because dvc.yaml and the flow come from the
same stage list (tasks/stages.py) and the stage's params are the ones params.yaml gives DVC.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optiflow.config import Config, load_config
from optiflow.errors import LineageError
from optiflow.io import read_json, sha256_tree, write_json
from tasks.stages import STAGES, StageSpec, render_dvc_yaml

if TYPE_CHECKING:
    from prefect import Task

log = logging.getLogger("optiflow.lineage")

STAMPS = ".optiflow/stages"


def stage_key(spec: StageSpec, config: Config) -> str:
    return f"optiflow-{spec.name}-" + hashlib.sha256(spec.fingerprint(config).encode()).hexdigest()


def outputs_digest(spec: StageSpec, config: Config) -> str | None:
    """Hash of the stage's outputs as they are on disk; None when one is missing."""
    paths = spec.out_paths(config)
    if not all(path.exists() for path in paths):
        return None
    return hashlib.sha256("".join(sha256_tree(path) for path in paths).encode()).hexdigest()


def read_stamp(spec: StageSpec, config: Config) -> dict[str, Any] | None:
    path = config.root / STAMPS / f"{spec.name}.json"
    return read_json(path) if path.is_file() else None


def stamp_matches(spec: StageSpec, config: Config) -> bool:
    """The outputs on disk are the ones the stage made for its current inputs."""
    stamp = read_stamp(spec, config)
    return stamp is not None and (stamp["key"], stamp["outputs"]) == (
        stage_key(spec, config),
        outputs_digest(spec, config),
    )


def write_stamp(spec: StageSpec, config: Config, result: dict[str, Any]) -> None:
    """Record that the outputs now on disk were made for the stage's current inputs, with its result."""
    write_json(
        config.root / STAMPS / f"{spec.name}.json",
        {"key": stage_key(spec, config), "outputs": outputs_digest(spec, config), "result": result},
    )


def check_inputs(spec: StageSpec, config: Config) -> None:
    """Refuse to run ``spec`` on an input the record says its stage made for other inputs than this run's: another
    run (other settings, other data) replaced it. An input without a stamp, or whose stamp describes other bytes
    (restored by `dvc checkout`, say), has no record to contradict; DVC's own record vouches for it."""
    for upstream in STAGES:
        made = set((*upstream.outs, *upstream.metrics, *upstream.plots))
        if upstream is spec or not made & set(spec.deps):
            continue
        stamp = read_stamp(upstream, config)
        if stamp is None or stamp["outputs"] != outputs_digest(upstream, config):
            continue
        if stamp["key"] != stage_key(upstream, config):
            paths = ", ".join(str(config.path(key).relative_to(config.root)) for key in sorted(made & set(spec.deps)))
            raise LineageError(
                f"stage {spec.name}: its input(s) {paths} were made by stage {upstream.name} for other inputs than "
                f"this run's (another run with other settings or data wrote them); run stage {upstream.name} again "
                "first (`dvc repro` or `optiflow train` does)"
            )


def seed_cache(stage_task: Task, spec: StageSpec, config: Config) -> None:
    """When `dvc repro` made the outputs now on disk (their stamp matches, the Prefect cache has no record of it),
    give the cache the stamp's result, so the task is reported cached instead of running again."""
    from prefect.context import FlowRunContext
    from prefect.results import get_result_store

    stamp = read_stamp(spec, config)
    if stamp is None or "result" not in stamp or not stamp_matches(spec, config) or FlowRunContext.get() is None:
        return
    store = get_result_store().update_for_task(stage_task)
    key = stage_key(spec, config)
    if not store.exists(key):
        store.write(obj=stamp["result"], key=key)


@contextlib.contextmanager
def dvc_lock_committer(config: Config, params_path: str | Path) -> Iterator[Callable[[StageSpec], None]]:
    """``commit(spec)`` writes a completed stage into dvc.lock, when dvc.lock can describe this run; else it does
    nothing (the reason is logged once)."""
    reason = _not_dvc_run(config, Path(params_path))
    if reason is not None:
        log.info("dvc.lock left as it is: %s", reason)
        yield lambda spec: None
        return
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    with Repo(str(config.root)) as repo:

        def commit(spec: StageSpec) -> None:
            try:
                repo.commit(spec.name, force=True)
            except DvcException as exc:  # DVC busy (another dvc process holds its lock): the stage stays unrecorded
                log.warning("dvc.lock not updated for stage %s (%s); `dvc repro` will run it again", spec.name, exc)

        yield commit


def _not_dvc_run(config: Config, params_path: Path) -> str | None:
    """Why dvc.lock cannot record this run (None when it can): no DVC project, a dvc.yaml rendered for other paths,
    or settings for the stages that differ from the params.yaml DVC reads (-S overrides, another params file)."""
    root = config.root
    if not (root / ".dvc").is_dir() or not (root / "dvc.yaml").is_file():
        return "not a DVC project"
    if (root / "dvc.yaml").read_text(encoding="utf-8") != render_dvc_yaml(config):
        return "dvc.yaml does not describe this run's stages and paths (re-render it with `optiflow dvc-yaml`)"
    dvc_params = root / "params.yaml"
    if not dvc_params.is_file():
        return "no params.yaml for DVC to read"
    dvc_view = load_config(dvc_params).params
    differ = [
        spec.name for spec in STAGES if dvc_view.subset_hash(spec.params) != config.params.subset_hash(spec.params)
    ]
    if differ:
        return f"this run's settings for stage(s) {differ} differ from params.yaml (-S overrides or another file)"
    return None
