"""The one list of training stages: what each reads, writes and depends on.

dvc.yaml is rendered from this list (`optiflow dvc-yaml`), the Prefect cache keys are computed from it, and a test
holds dvc.yaml, this list and the training flow to the same stages in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from optiflow.config import Config
from optiflow.io import sha256_tree

SOURCE = "source"  # the data source named in params.yaml data.source, not a paths key

_CORE = ("optiflow/config.py", "optiflow/io.py", "optiflow/errors.py", "tasks/common.py")


@dataclass(frozen=True)
class StageSpec:
    name: str
    params: tuple[str, ...]
    deps: tuple[str, ...]
    outs: tuple[str, ...]
    code: tuple[str, ...]
    metrics: tuple[str, ...] = ()
    plots: tuple[str, ...] = ()
    cache_outs: bool = True
    # DVC deletes a stage's outputs before running it; persisted ones stay until the stage's atomic writes replace
    # them, so a run that fails (bad input) leaves the last good ones. DVC skips its run cache for such a stage.
    persist_outs: bool = False

    def dep_paths(self, config: Config) -> list[Path]:
        return [_resolve(config, key) for key in self.deps] + [config.root / path for path in self.code]

    def out_paths(self, config: Config) -> list[Path]:
        return [_resolve(config, key) for key in (*self.outs, *self.metrics, *self.plots)]

    def fingerprint(self, config: Config) -> str:
        """Content of every dependency plus the params it reads: equal fingerprints mean equal outputs."""
        parts = [self.name, config.params.subset_hash(self.params)]
        for path in self.dep_paths(config):
            parts.append(f"{path.relative_to(config.root)}={sha256_tree(path) if path.exists() else 'missing'}")
        return "\n".join(parts)


STAGES: tuple[StageSpec, ...] = (
    StageSpec(
        name="ingest",
        params=("data", "validate"),
        deps=(SOURCE,),
        outs=("dataset", "validation"),
        code=(*_CORE, "tasks/ingest.py", "optiflow/ingest.py", "optiflow/validation.py"),
        persist_outs=True,
    ),
    StageSpec(
        name="split",
        params=("seed", "data", "split"),
        deps=("dataset", "validation"),
        outs=("train", "valid", "test", "reference"),
        code=(*_CORE, "tasks/split.py", "optiflow/split.py"),
    ),
    StageSpec(
        name="tune",
        params=("seed", "data", "tune", "train", "orchestration"),
        deps=("train",),
        outs=("tuning",),
        code=(
            *_CORE,
            "tasks/tune.py",
            "tasks/fanout.py",
            "optiflow/tuning.py",
            "optiflow/ingest.py",
            "optiflow/models.py",
            "optiflow/mlp.py",
            "optiflow/split.py",
            "optiflow/registry.py",
        ),
    ),
    StageSpec(
        name="train",
        params=("seed", "data", "train"),
        deps=("train", "tuning"),
        outs=("candidates",),
        code=(
            *_CORE,
            "tasks/train.py",
            "optiflow/ingest.py",
            "optiflow/models.py",
            "optiflow/mlp.py",
            "optiflow/split.py",
            "optiflow/tuning.py",
        ),
    ),
    StageSpec(
        name="compress",
        params=("seed", "data", "evaluate", "compress", "orchestration"),
        deps=("candidates", "train", "valid", "test"),
        outs=("compressed",),
        metrics=("compression",),
        plots=("compression_plots",),
        code=(
            *_CORE,
            "tasks/compress.py",
            "tasks/fanout.py",
            "optiflow/compression.py",
            "optiflow/tuning.py",
            "optiflow/evaluation.py",
            "optiflow/models.py",
            "optiflow/mlp.py",
            "optiflow/split.py",
        ),
    ),
    StageSpec(
        name="evaluate",
        params=("data", "evaluate"),
        deps=("candidates", "compressed", "valid", "test"),
        outs=("evaluation",),
        metrics=("metrics",),
        plots=("plots",),
        code=(
            *_CORE,
            "tasks/evaluate.py",
            "optiflow/evaluation.py",
            "optiflow/calibration.py",
            "optiflow/models.py",
            "optiflow/mlp.py",
            "optiflow/split.py",
        ),
    ),
    StageSpec(
        name="fairness",
        params=("seed", "data", "fairness"),
        deps=("candidates", "compressed", "valid", "test", "metrics"),
        outs=("fairness", "fairness_table"),
        code=(
            *_CORE,
            "tasks/fairness.py",
            "optiflow/fairness.py",
            "optiflow/gates.py",
            "optiflow/models.py",
            "optiflow/mlp.py",
            "optiflow/split.py",
        ),
    ),
    StageSpec(
        name="explain",
        params=("seed", "data", "explain"),
        deps=("candidates", "compressed", "train", "test", "metrics"),
        outs=("explain",),
        code=(
            *_CORE,
            "tasks/explain.py",
            "optiflow/explain.py",
            "optiflow/ingest.py",
            "optiflow/models.py",
            "optiflow/mlp.py",
            "optiflow/split.py",
        ),
    ),
    StageSpec(
        name="register",
        params=("seed", "data", "evaluate", "robustness", "gates", "register", "tracking"),
        deps=(
            "candidates",
            "compressed",
            "compression",
            "compression_plots",
            "train",
            "valid",
            "test",
            "reference",
            "validation",
            "metrics",
            "plots",
            "evaluation",
            "fairness",
            "fairness_table",
            "explain",
        ),
        outs=("registration", "run_report"),
        code=(
            *_CORE,
            "tasks/register.py",
            "optiflow/registry.py",
            "optiflow/pyfunc_model.py",
            "optiflow/serving_spec.py",
            "optiflow/gates.py",
            "optiflow/report.py",
            "optiflow/robustness.py",
            "optiflow/evaluation.py",
            "optiflow/calibration.py",
            "optiflow/models.py",
            "optiflow/mlp.py",
            "optiflow/split.py",
        ),
        cache_outs=False,
    ),
)


def stage(name: str) -> StageSpec:
    for spec in STAGES:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown stage {name!r}; stages: {[s.name for s in STAGES]}")


def render_dvc_yaml(stages: tuple[StageSpec, ...] = STAGES) -> str:
    """dvc.yaml with paths templated from params.yaml, so paths live in one place for DVC and Python alike."""
    document: dict[str, dict] = {"stages": {}}
    for spec in stages:
        entry: dict[str, object] = {
            "cmd": f"python -m flows.cli stage {spec.name}",
            "deps": [_template(key) for key in spec.deps] + list(spec.code),
            "params": list(spec.params),
        }
        if spec.outs:
            entry["outs"] = [_out(key, spec) for key in spec.outs]
        if spec.metrics:
            entry["metrics"] = [{_template(key): {"cache": False}} for key in spec.metrics]
        if spec.plots:
            entry["plots"] = [_template(key) for key in spec.plots]
        document["stages"][spec.name] = entry
    header = "# Generated from optiflow/stages.py by `optiflow dvc-yaml`; edit the stage list there, not here.\n"
    return header + yaml.safe_dump(document, sort_keys=False, width=120)


def _out(key: str, spec: StageSpec) -> str | dict[str, dict[str, bool]]:
    options = {**({} if spec.cache_outs else {"cache": False}), **({"persist": True} if spec.persist_outs else {})}
    return {_template(key): options} if options else _template(key)


def _template(key: str) -> str:
    return "${data.source}" if key == SOURCE else "${paths." + key + "}"


def _resolve(config: Config, key: str) -> Path:
    return config.source if key == SOURCE else config.path(key)
