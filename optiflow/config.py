"""params.yaml parsed once into frozen, validated objects; every other module receives these, never the raw dict.

Unknown keys are errors (a typo must not silently fall back to a default), and every message names the key.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from optiflow.errors import ConfigError
from optiflow.fairness import FairnessParams
from optiflow.gates import GateParams
from optiflow.robustness import RobustnessParams
from optiflow.tuning import TuneParams

Label = str | int | bool
PrimaryMetric = Literal["roc_auc", "pr_auc", "f1", "accuracy", "neg_log_loss", "neg_brier"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class FeatureTypes(_Strict):
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _disjoint(self) -> FeatureTypes:
        both = sorted(set(self.numeric) & set(self.categorical))
        if both:
            raise ValueError(f"columns declared both numeric and categorical: {both}")
        return self


class DataParams(_Strict):
    source: str
    sha256: str | None = None
    format: Literal["auto", "csv", "parquet"] = "auto"
    target: str
    positive_label: Label
    negative_label: Label
    id_columns: tuple[str, ...] = ()
    sensitive_features: tuple[str, ...] = ()
    feature_types: FeatureTypes | None = None
    fill_missing: dict[str, float | int | str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _labels_differ(self) -> DataParams:
        if self.positive_label == self.negative_label:
            raise ValueError("positive_label and negative_label must differ")
        if self.target in self.id_columns:
            raise ValueError(f"target {self.target!r} is also listed in id_columns")
        return self


class ValidateParams(_Strict):
    min_rows: int = Field(100, ge=1)
    max_null_fraction: float = Field(0.0, ge=0.0, le=1.0)
    null_fraction: dict[str, float] = Field(default_factory=dict)
    ranges: dict[str, tuple[float | None, float | None]] = Field(default_factory=dict)
    domains: dict[str, tuple[Label, ...]] = Field(default_factory=dict)
    max_feature_auc: float | None = Field(0.99, gt=0.5, le=1.0)

    @field_validator("ranges")
    @classmethod
    def _ordered(cls, ranges: dict[str, tuple[float | None, float | None]]) -> dict:
        for column, (low, high) in ranges.items():
            if low is not None and high is not None and low > high:
                raise ValueError(f"range for {column!r}: low {low} > high {high}")
        return ranges


class SplitParams(_Strict):
    test_size: float = Field(0.2, gt=0.0, lt=1.0)
    valid_size: float = Field(0.2, gt=0.0, lt=1.0)
    reference_rows: int = Field(1000, ge=1)

    @model_validator(mode="after")
    def _room_for_train(self) -> SplitParams:
        if self.test_size + self.valid_size >= 0.9:
            raise ValueError(
                f"test_size + valid_size = {self.test_size + self.valid_size:.2f} leaves under 10% for training"
            )
        return self


class TrainParams(_Strict):
    families: dict[str, dict[str, Any]]

    @field_validator("families")
    @classmethod
    def _known_families(cls, families: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from optiflow.models import check_hyperparameters

        if not families:
            raise ValueError("at least one model family is required")
        for family, hyperparameters in families.items():
            check_hyperparameters(family, hyperparameters or {})
        return families


class EvaluateParams(_Strict):
    primary_metric: PrimaryMetric = "roc_auc"
    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    threshold_policy: Literal["fixed", "max_f1", "cost"] = "fixed"
    cost_fp: float = Field(1.0, ge=0.0)
    cost_fn: float = Field(1.0, ge=0.0)
    calibration_bins: int = Field(10, ge=1)
    slices: tuple[str, ...] = ()


class ExplainParams(_Strict):
    max_rows: int = Field(500, ge=1)
    background_rows: int = Field(100, ge=1)
    top_k: int = Field(3, ge=0)
    permutation_repeats: int = Field(5, ge=1)
    max_rank_gap: int = Field(3, ge=0)


class RegisterParams(_Strict):
    model_name: str = Field(min_length=1)
    champion_alias: str = "champion"
    previous_alias: str = "previous"

    @model_validator(mode="after")
    def _aliases_differ(self) -> RegisterParams:
        if self.champion_alias == self.previous_alias:
            raise ValueError(f"champion_alias and previous_alias must differ, both are {self.champion_alias!r}")
        return self


class TrackingParams(_Strict):
    uri: str = "sqlite:///mlflow.db"
    experiment: str = "optiflow"
    artifact_location: str = "mlartifacts"

    @field_validator("uri")
    @classmethod
    def _no_credentials(cls, uri: str) -> str:
        """params.yaml is committed and logged to MLflow: credentials belong in the environment only."""
        from urllib.parse import urlsplit

        if urlsplit(uri).password:
            raise ValueError(
                "contains a password; set MLFLOW_TRACKING_URI (or MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD) "
                "in the environment instead (the value is not repeated here)"
            )
        return uri


class PathsParams(_Strict):
    """Every file a stage reads or writes, relative to the project root; dvc.yaml templates these."""

    dataset: str
    validation: str
    validation_failures: str
    train: str
    valid: str
    test: str
    reference: str
    tuning: str
    candidates: str
    metrics: str
    evaluation: str
    plots: str
    fairness: str
    fairness_table: str
    explain: str
    registration: str
    run_report: str


class Params(_Strict):
    seed: int = 42
    data: DataParams
    validation: ValidateParams = Field(default_factory=ValidateParams, alias="validate")
    split: SplitParams = Field(default_factory=SplitParams)
    tune: TuneParams = Field(default_factory=TuneParams)
    train: TrainParams
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    fairness: FairnessParams = Field(default_factory=FairnessParams)
    explain: ExplainParams = Field(default_factory=ExplainParams)
    robustness: RobustnessParams = Field(default_factory=RobustnessParams)
    gates: GateParams = Field(default_factory=GateParams)
    registry: RegisterParams = Field(alias="register")
    tracking: TrackingParams = Field(default_factory=TrackingParams)
    paths: PathsParams

    def subset_hash(self, keys: tuple[str, ...]) -> str:
        """Stable hash of the named top-level groups: the cache key of a stage's configuration."""
        dumped = self.model_dump(mode="json", by_alias=True)
        chosen = {key: dumped[key] for key in sorted(keys)}
        return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Config:
    """Validated params plus the project root every relative path is resolved against."""

    root: Path
    params: Params

    def path(self, key: str) -> Path:
        return self.root / getattr(self.params.paths, key)

    @property
    def source(self) -> Path:
        return self.root / self.params.data.source


def redact_uri(text: str) -> str:
    """Hide the password of any ``scheme://user:password@host`` in ``text`` (URIs end up in logs and errors)."""
    return re.sub(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@/\s]+@", r"\1***@", text)


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Set dotted keys (``split.test_size``), as ``dvc exp run -S`` does; strings are read as YAML scalars."""
    result = copy.deepcopy(dict(raw))
    for dotted, value in overrides.items():
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip() else value
        node = result
        *parents, leaf = dotted.split(".")
        for part in parents:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {dotted!r}: {part!r} is not a group of keys")
            node = child
        node[leaf] = value
    return result


def parse_params(raw: Mapping[str, Any], origin: str = "params.yaml") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "(top level)"
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown key (check the spelling; see the README's params reference)"
            elif not isinstance(error.get("input"), dict | list):
                message += f" (got {redact_uri(repr(error.get('input')))})"
            problems.append(f"  {where}: {message}")
        raise ConfigError(f"{origin} is invalid:\n" + "\n".join(problems)) from None


def load_config(params_path: str | Path = "params.yaml", overrides: Mapping[str, Any] | None = None) -> Config:
    """Read and validate params.yaml; the project root is the folder that holds it."""
    path = Path(params_path).resolve()
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of parameter groups, got {type(raw).__name__}")
    params = parse_params(apply_overrides(raw, overrides or {}), origin=str(path))
    return Config(root=path.parent, params=params)
