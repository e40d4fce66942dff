"""The one list of training stages: what each reads, writes and depends on.

dvc.yaml is rendered from this list and the effective paths (`optiflow dvc-yaml`), the Prefect cache keys are
computed from it, and the training flow, `optiflow stage NAME` and the tests run its stages, in its order, through
`task_for`.

A stage's `params` are the params.yaml groups it reads: DVC and the Prefect cache key track them. The runtime groups
(tracking, serve, score, orchestration) are never listed: they say where and how a stage runs, not what it computes,
so changing them must not invalidate a stage.
"""

from __future__ import annotations

import ast
import functools
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from optiflow.config import RUN_REPORTS, RUNTIME_GROUPS, TIMING_REPORTS, Config
from optiflow.errors import OptiflowError
from optiflow.io import sha256_tree

if TYPE_CHECKING:
    from prefect import Task

SOURCE = "source"  # the data source named in params.yaml data.source, not a paths key
SOURCE_TREE = Path(__file__).resolve().parents[1]  # the folder holding optiflow/ and tasks/
PROJECT_PACKAGES = ("optiflow", "tasks")  # what a stage's code closure follows (flows and tools are not stage code)


@dataclass(frozen=True)
class StageSpec:
    name: str
    params: tuple[str, ...]
    deps: tuple[str, ...]
    outs: tuple[str, ...]
    metrics: tuple[str, ...] = ()
    plots: tuple[str, ...] = ()
    cache_outs: bool = True
    # DVC deletes a stage's outputs before running it; persisted ones stay until the stage's atomic writes replace
    # them, so a run that fails (bad input) leaves the last good ones. DVC skips its run cache for such a stage.
    persist_outs: bool = False
    # Reports the stage also writes that hold timings measured on this machine (they differ on every run): no DVC
    # out and no other stage's declared input, so every declared output is byte-stable and a re-run that makes the
    # same outputs leaves dvc.lock, the Prefect cache and every later stage as they were. (register shows the
    # compression report in the run report when it belongs to the selection it reads: tasks.register.)
    timings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        runtime = sorted(set(self.params) & set(RUNTIME_GROUPS))
        if runtime:
            raise ValueError(f"stage {self.name}: runtime group(s) {runtime} must not be stage params")

    @property
    def shell(self) -> str:
        """The stage's task module, relative to the source tree."""
        return f"tasks/{self.name}.py"

    @property
    def code(self) -> tuple[str, ...]:
        """Every project source file the stage's task imports, directly or not: what a code change re-runs."""
        return import_closure(self.shell)

    def dep_paths(self, config: Config) -> list[Path]:
        return [_resolve(config, key) for key in self.deps] + [SOURCE_TREE / path for path in self.code]

    def out_paths(self, config: Config) -> list[Path]:
        return [_resolve(config, key) for key in (*self.outs, *self.metrics, *self.plots)]

    def fingerprint(self, config: Config) -> str:
        """Content of every dependency plus the params it reads: equal fingerprints mean equal outputs."""
        parts = [self.name, config.params.subset_hash(self.params)]
        for path in self.dep_paths(config):
            where = path.relative_to(SOURCE_TREE) if path.is_relative_to(SOURCE_TREE) else path.relative_to(config.root)
            parts.append(f"{where}={sha256_tree(path) if path.exists() else 'missing'}")
        return "\n".join(parts)


STAGES: tuple[StageSpec, ...] = (
    StageSpec(
        name="ingest",
        params=("data", "validate"),
        deps=(SOURCE,),
        outs=("dataset", "validation"),
        persist_outs=True,
    ),
    StageSpec(
        name="split",
        params=("seed", "data", "split"),
        deps=("dataset", "validation"),
        outs=("train", "valid", "test", "holdout", "pool", "reference"),
    ),
    StageSpec(
        name="tune",
        params=("seed", "data", "tune", "train"),
        deps=("train",),
        outs=("tuning",),
    ),
    StageSpec(
        name="train",
        params=("seed", "data", "train"),
        deps=("train", "tuning"),
        outs=("candidates",),
    ),
    StageSpec(
        name="compress",
        params=("seed", "data", "evaluate", "compress"),
        deps=("candidates", "train", "valid", "test"),
        outs=("compressed",),
        timings=TIMING_REPORTS,
    ),
    StageSpec(
        name="evaluate",
        params=("seed", "data", "evaluate"),
        deps=("candidates", "compressed", "valid", "test"),
        outs=("selected", "evaluation", "metrics"),
        plots=("plots",),
    ),
    StageSpec(
        name="fairness",
        params=("seed", "data", "fairness"),
        deps=("selected", "valid", "test", "metrics"),
        outs=("fairness", "fairness_table"),
    ),
    StageSpec(
        name="explain",
        params=("seed", "data", "explain"),
        deps=("selected", "train", "test", "metrics"),
        outs=("explain",),
    ),
    StageSpec(
        name="register",
        params=("seed", "data", "evaluate", "robustness", "gates", "register"),
        deps=(
            *("selected", "train", "valid", "test", "holdout", "reference"),
            *(key for key in RUN_REPORTS if key not in TIMING_REPORTS),
        ),
        outs=("registration", "runs"),
        metrics=("headline",),
        cache_outs=False,
        persist_outs=True,  # the per-version reports accumulate; the champion's run_report is written on promotion
    ),
)


def stage(name: str) -> StageSpec:
    for spec in STAGES:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown stage {name!r}; stages: {[s.name for s in STAGES]}")


def task_for(spec: StageSpec) -> Task:
    """The stage's Prefect task: the function named like the stage in its task module (imported on first use, so
    rendering dvc.yaml needs no Prefect)."""
    return getattr(importlib.import_module(f"tasks.{spec.name}"), spec.name)


def render_dvc_yaml(config: Config, stages: tuple[StageSpec, ...] = STAGES) -> str:
    """dvc.yaml with the effective paths of ``config`` written out (schema defaults or params.yaml's `paths:`) and
    the data source templated from params.yaml (`${data.source}`), so DVC and Python read the same files."""
    document: dict[str, dict] = {"stages": {}}
    for spec in stages:
        entry: dict[str, object] = {
            "cmd": f"python -m flows stage {spec.name}",
            "deps": [_dvc_path(config, key) for key in spec.deps] + list(spec.code),
            "params": list(spec.params),
        }
        if spec.outs:
            entry["outs"] = [_out(config, key, spec) for key in spec.outs]
        if spec.metrics:
            # kept in git (cache: false), so `dvc metrics diff HEAD~1` reads the committed figures
            options = {"cache": False, **({"persist": True} if spec.persist_outs else {})}
            entry["metrics"] = [{_dvc_path(config, key): options} for key in spec.metrics]
        if spec.plots:
            entry["plots"] = [_dvc_path(config, key) for key in spec.plots]
        document["stages"][spec.name] = entry
    header = (
        "# Generated from tasks/stages.py and the effective paths by `optiflow dvc-yaml`; edit the stage list or\n"
        "# params.yaml `paths:` and re-render, not this file.\n"
    )
    return header + yaml.safe_dump(document, sort_keys=False, width=120)


def _out(config: Config, key: str, spec: StageSpec) -> str | dict[str, dict[str, bool]]:
    options = {**({} if spec.cache_outs else {"cache": False}), **({"persist": True} if spec.persist_outs else {})}
    return {_dvc_path(config, key): options} if options else _dvc_path(config, key)


def _dvc_path(config: Config, key: str) -> str:
    return "${data.source}" if key == SOURCE else getattr(config.params.paths, key)


def _resolve(config: Config, key: str) -> Path:
    return config.source if key == SOURCE else config.path(key)


@functools.cache
def import_closure(module_file: str) -> tuple[str, ...]:
    """``module_file`` and every project module it imports, transitively, as sorted paths relative to the source
    tree; imports made only for type checking are left out (they never run)."""
    seen: set[str] = set()
    pending = [module_file]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        pending.extend(_imported_files(SOURCE_TREE / current))
    return tuple(sorted(seen))


def imported_modules(path: Path) -> list[str]:
    """Every absolute import in ``path``, wherever it stands (lazy imports count: they run), except those made only
    for type checking; ``from a import b`` yields ``a`` and ``a.b`` (b may be a submodule)."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    type_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for statement in block.body
        for node in ast.walk(statement)
    }
    modules: list[str] = []
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.append(node.module)
            modules += [f"{node.module}.{alias.name}" for alias in node.names]
    return modules


@functools.cache
def _imported_files(path: Path) -> tuple[str, ...]:
    """The project files ``path`` imports (parsed once per process: stage closures share most modules)."""
    files = []
    for module in imported_modules(path):
        if module.split(".")[0] not in PROJECT_PACKAGES:
            continue
        parts = module.split(".")
        for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__.py and a/b/__init__.py first
            stem = "/".join(parts[:depth])
            for candidate in (f"{stem}.py", f"{stem}/__init__.py"):
                if (SOURCE_TREE / candidate).is_file():
                    files.append(candidate)
    return tuple(files)


REGISTRY_STAGE = "register"  # the stage whose versions go to the MLflow registry (drawn after it)


def render_mermaid(stages: tuple[StageSpec, ...] = STAGES) -> str:
    """The stage DAG as a Mermaid ``flowchart LR``: one node per stage, the raw data (`SOURCE`) first, and an edge from
    the stage that writes an input key to each stage that reads it (one edge per pair of stages). README.md holds it
    between ``<!-- dag:start -->`` and ``<!-- dag:end -->``; `optiflow docs` rewrites that block."""
    producer = {SOURCE: SOURCE}
    nodes = [f'    {SOURCE}[("data.source")]']
    edges: list[str] = []
    for spec in stages:
        nodes.append(f'    {spec.name}["{spec.name}"]')
        for key in spec.deps:
            edge = f"    {producer[key]} --> {spec.name}"
            if edge not in edges:
                edges.append(edge)
        producer.update(dict.fromkeys((*spec.outs, *spec.metrics, *spec.plots), spec.name))
    if any(spec.name == REGISTRY_STAGE for spec in stages):
        nodes.append('    registry[("MLflow registry")]')
        edges.append(f"    {REGISTRY_STAGE} --> registry")
    return "\n".join(["flowchart LR", *nodes, *edges]) + "\n"


DIAGRAM_START, DIAGRAM_END = "<!-- dag:start -->", "<!-- dag:end -->"


def with_stage_diagram(text: str, origin: str = "README.md") -> str:
    """``text`` with the Mermaid block between its dag markers redrawn from the stage list."""
    start, end = text.find(DIAGRAM_START), text.find(DIAGRAM_END)
    if start < 0 or end < start:
        raise OptiflowError(f"{origin}: no {DIAGRAM_START} ... {DIAGRAM_END} block to hold the stage diagram")
    return f"{text[:start]}{DIAGRAM_START}\n```mermaid\n{render_mermaid()}```\n{text[end:]}"
