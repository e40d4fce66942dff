"""params.yaml parsed once into frozen, validated objects; every other module receives these, never the raw dict.

Unknown keys are errors (a typo must not silently fall back to a default), and every message names the key.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from optiflow.config.types import HIGHER_IS_BETTER, Choice, Label, PrimaryMetric


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
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_rows: int | None = Field(None, ge=10)  # stratified cap on the train rows each family is fitted on

    @field_validator("families")
    @classmethod
    def _at_least_one(cls, families: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        # Names and hyperparameters are checked against the estimators by optiflow.modeling.families.check_settings.
        if not families:
            raise ValueError("at least one model family is required")
        return families


class EvaluateParams(_Strict):
    primary_metric: PrimaryMetric = "roc_auc"
    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    threshold_policy: Literal["fixed", "max_f1", "cost"] = "fixed"
    cost_fp: float = Field(1.0, ge=0.0)
    cost_fn: float = Field(1.0, ge=0.0)
    calibration_bins: int = Field(10, ge=1)
    slices: tuple[str, ...] = ()


class DistillParams(_Strict):
    enabled: bool = True
    teacher: str = "best"
    hidden_sizes: tuple[int, ...] | None = None
    hidden_layers: int = Field(1, ge=1)
    temperature: float = Field(2.0, gt=0.0)
    alpha: float = Field(0.7, ge=0.0, le=1.0)
    min_param_ratio: float = Field(10.0, ge=1.0)

    @field_validator("hidden_sizes")
    @classmethod
    def _positive(cls, sizes: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if sizes is not None and (not sizes or min(sizes) < 1):
            raise ValueError(f"hidden_sizes needs at least one layer of width >= 1, got {list(sizes)}")
        return sizes


class MeasureParams(_Strict):
    batch_sizes: tuple[int, ...] = (1, 4096)
    repeats: int = Field(30, ge=3)
    warmup: int = Field(5, ge=1)
    threads: int = Field(1, ge=1)


class SelectParams(_Strict):
    objective: Literal["latency", "size"] = "size"
    max_auc_drop: float = Field(0.005, ge=0.0)
    max_group_drop_ratio: float = Field(2.0, ge=1.0)
    group_drop_floor: float = Field(0.0025, ge=0.0)
    min_group_size: int = Field(50, ge=1)


class CompressParams(_Strict):
    family: str = "mlp"
    sparsities: tuple[float, ...] = (0.5, 0.8)
    structured_keep: tuple[float, ...] = (0.5,)
    quantize: bool = True
    finetune_epochs: int = Field(10, ge=1)
    distill: DistillParams = Field(default_factory=DistillParams)
    measure: MeasureParams = Field(default_factory=MeasureParams)
    select: SelectParams = Field(default_factory=SelectParams)

    @field_validator("sparsities", "structured_keep")
    @classmethod
    def _fractions(cls, values: tuple[float, ...]) -> tuple[float, ...]:
        outside = [value for value in values if not 0.0 < value < 1.0]
        if outside:
            raise ValueError(f"values must lie strictly between 0 and 1, got {outside}")
        return values


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


class ScoreParams(_Strict):
    chunk_rows: int = Field(50_000, ge=1)
    workers: int = Field(2, ge=1)
    reasons: int = Field(3, ge=0)
    cache: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"


class ServeParams(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    max_batch_size: int = Field(256, ge=1)
    max_wait_ms: float = Field(2.0, ge=0.0)
    max_body_bytes: int = Field(1_000_000, ge=1)
    max_rows_per_request: int = Field(1000, ge=1)
    reload_seconds: float = Field(10.0, gt=0.0)
    cache: bool = False
    rate_limit_per_minute: int | None = Field(None, ge=1)  # requests per client (X-API-Key or IP); null = no limit
    probability_decimals: int | None = Field(None, ge=0, le=15)  # round returned probabilities; null = full precision


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


class MonitorParams(_Strict):
    """Drift checks on new batches and when they may start a retraining (optiflow/drift.py, optiflow/decision.py)."""

    num_method: str = "wasserstein"
    cat_method: str = "jensenshannon"
    num_threshold: float = Field(0.1, gt=0.0)
    cat_threshold: float = Field(0.1, gt=0.0)
    prediction_method: str = "wasserstein"
    prediction_threshold: float = Field(0.1, gt=0.0)
    drift_share: float = Field(0.05, gt=0.0, le=1.0)
    severe_drift_share: float = Field(0.3, gt=0.0, le=1.0)
    retrain_on_prediction_drift: bool = True
    max_quality_drop: float = Field(0.05, gt=0.0, le=1.0)
    cooldown_batches: int = Field(3, ge=0)
    cooldown_hours: float = Field(24.0, ge=0.0)
    min_new_rows: int = Field(500, ge=0)
    window: Literal["all", "last_k", "training_plus_labelled"] = "training_plus_labelled"
    last_k: int = Field(3, ge=1)
    sample_rows: int | None = Field(100_000, ge=100)

    @model_validator(mode="after")
    def _severe_above_threshold(self) -> MonitorParams:
        if self.severe_drift_share < self.drift_share:
            raise ValueError(f"severe_drift_share {self.severe_drift_share} is below drift_share {self.drift_share}")
        return self


class SimulateParams(_Strict):
    """Synthetic drifted batches drawn from the held-out test split (`optiflow simulate-drift`)."""

    batch_rows: int = Field(1000, ge=10)
    control_batches: int = Field(1, ge=0)
    price_increase: float = Field(0.25, gt=0.0)
    contract_month_to_month: float = Field(0.9, gt=0.0, lt=1.0)
    segment_share: float = Field(0.6, gt=0.0, le=1.0)
    gradual_batches: int = Field(10, ge=0)
    gradual_max_increase: float = Field(0.4, gt=0.0)


class OrchestrationParams(_Strict):
    """Where independent pieces of a stage run (tuning shares today; compression variants and scoring chunks reuse
    the same hook): Prefect's thread pool in this process, or Dask workers through prefect-dask."""

    task_runner: Literal["threads", "dask"] = "threads"
    dask_address: str | None = None
    dask_workers: int = Field(2, ge=1)
    threads_per_worker: int = Field(1, ge=1)
    tune_workers: int | None = Field(None, ge=1)

    @field_validator("dask_address")
    @classmethod
    def _scheduler_url(cls, address: str | None) -> str | None:
        if address is not None and not address.startswith(("tcp://", "tls://", "ws://", "wss://")):
            raise ValueError(f"expected a Dask scheduler address like tcp://host:8786, got {address!r}")
        return address

    @property
    def workers(self) -> int:
        """Parallel shares per study: tune_workers, or one per Dask worker with dask, one with threads."""
        if self.tune_workers is not None:
            return self.tune_workers
        return self.dask_workers if self.task_runner == "dask" else 1


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
    compressed: str
    compression: str
    compression_plots: str
    metrics: str
    evaluation: str
    plots: str
    fairness: str
    fairness_table: str
    explain: str
    registration: str
    run_report: str
    monitoring: str
    monitoring_history: str
    batches: str
    monitored: str
    retraining: str
    prediction_cache: str


class FairnessParams(BaseModel):
    """The ``fairness:`` group of params.yaml; a threshold set to null switches that gate off."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    max_demographic_parity_difference: float | None = Field(0.1, ge=0.0, le=1.0)
    min_demographic_parity_ratio: float | None = Field(0.8, ge=0.0, le=1.0)
    max_equalized_odds_difference: float | None = Field(0.1, ge=0.0, le=1.0)
    min_group_size: int = Field(30, ge=1)
    mitigate: bool = False
    mitigation: Literal["threshold_optimizer"] = "threshold_optimizer"
    constraint: Literal["demographic_parity", "equalized_odds"] = "demographic_parity"


class GateParams(BaseModel):
    """The ``gates:`` group of params.yaml: what a challenger must reach to be registered."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    min_quality: dict[str, float] = Field(default_factory=dict)
    max_latency_ms_per_1k_rows: float | None = Field(None, gt=0.0)
    max_model_bytes: int | None = Field(None, gt=0)
    min_delta: float = Field(0.0, ge=0.0)
    guard_tolerances: dict[str, float] = Field(default_factory=dict)
    max_flip_rate: float | None = Field(None, ge=0.0, le=1.0)
    max_auc_drop: float | None = Field(None, ge=0.0, le=1.0)

    @field_validator("min_quality", "guard_tolerances")
    @classmethod
    def _known_metrics(cls, values: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(values) - set(HIGHER_IS_BETTER))
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; known: {list(HIGHER_IS_BETTER)}")
        return values

    @field_validator("guard_tolerances")
    @classmethod
    def _non_negative(cls, tolerances: dict[str, float]) -> dict[str, float]:
        negative = {metric: value for metric, value in tolerances.items() if value < 0}
        if negative:
            raise ValueError(f"tolerances must be >= 0, got {negative}")
        return tolerances


class Bound(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    relative: float | None = Field(None, gt=0.0, lt=1.0)  # ±fraction of the value
    absolute: float | None = Field(None, gt=0.0)  # ± this many units
    non_negative: bool = True  # clip at 0: a charge or a tenure is never negative


class RobustnessParams(BaseModel):
    """The ``robustness:`` group of params.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bounds: dict[str, Bound] = Field(default_factory=dict)
    random_draws: int = Field(5, ge=1)  # random perturbations per row
    search_levels: int = Field(3, ge=2, le=5)  # values tried per column in [-bound, +bound]; 3 = corners + centre
    max_rows: int = Field(500, ge=1)  # test rows evaluated


class ParamSpec(_Strict):
    """One hyperparameter's search range: a float or int interval (optionally log-scaled) or a list of choices."""

    type: Literal["float", "int", "categorical"]
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    choices: tuple[Choice, ...] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ParamSpec:
        if self.type == "categorical":
            if self.low is not None or self.high is not None or self.log:
                raise ValueError("categorical takes `choices` only (no low / high / log)")
            if not self.choices:
                raise ValueError("categorical needs a non-empty `choices` list")
            return self
        if self.choices is not None:
            raise ValueError(f"{self.type} takes low / high, not `choices` (use type: categorical)")
        if self.low is None or self.high is None:
            raise ValueError(f"{self.type} needs both `low` and `high`")
        if self.low > self.high:
            raise ValueError(f"low {self.low} > high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0, got low {self.low}")
        if self.type == "int" and not (float(self.low).is_integer() and float(self.high).is_integer()):
            raise ValueError(f"int needs whole-number bounds, got low {self.low}, high {self.high}")
        return self

    def values_to_check(self) -> tuple[Any, ...]:
        """The bounds or choices, typed as a trial would receive them: each must be valid for the estimator."""
        if self.type == "categorical":
            return tuple(self.choices or ())
        cast = int if self.type == "int" else float
        return cast(self.low), cast(self.high)


class TuneParams(_Strict):
    """The `tune:` group of params.yaml: sampler, budget, CV folds, pruner, parallelism, storage, spaces."""

    sampler: Literal["grid", "random", "tpe"] = "tpe"
    n_trials: int = Field(30, ge=1)
    timeout: float | None = Field(None, gt=0)
    cv_folds: int = Field(5, ge=2)
    pruner: Literal["median", "successive_halving", "none"] = "median"
    n_jobs: int = Field(1, ge=1)
    # Native (OpenMP/BLAS) threads per trial; None = cores / n_jobs. 1 by default: a 2-thread OpenMP fit stalls
    # 8-70x whenever another process holds a core (bench/tuning.py), while trials in parallel use the cores well.
    threads_per_trial: int | None = Field(1, ge=1)
    storage: str | None = None
    max_rows: int | None = Field(None, ge=10)  # stratified cap on the train rows a study cross-validates on
    grid_points: int = Field(5, ge=2)
    multi_objective: bool = False
    spaces: dict[str, dict[str, ParamSpec]] = Field(default_factory=dict)


class Params(_Strict):
    seed: int = 42
    data: DataParams
    validation: ValidateParams = Field(default_factory=ValidateParams, alias="validate")
    split: SplitParams = Field(default_factory=SplitParams)
    tune: TuneParams = Field(default_factory=TuneParams)
    train: TrainParams
    compress: CompressParams = Field(default_factory=CompressParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    fairness: FairnessParams = Field(default_factory=FairnessParams)
    explain: ExplainParams = Field(default_factory=ExplainParams)
    robustness: RobustnessParams = Field(default_factory=RobustnessParams)
    gates: GateParams = Field(default_factory=GateParams)
    registry: RegisterParams = Field(alias="register")
    score: ScoreParams = Field(default_factory=ScoreParams)
    serve: ServeParams = Field(default_factory=ServeParams)
    tracking: TrackingParams = Field(default_factory=TrackingParams)
    monitor: MonitorParams = Field(default_factory=MonitorParams)
    simulate: SimulateParams = Field(default_factory=SimulateParams)
    orchestration: OrchestrationParams = Field(default_factory=OrchestrationParams)
    paths: PathsParams

    def subset_hash(self, keys: tuple[str, ...]) -> str:
        """Stable hash of the named top-level groups: the cache key of a stage's configuration."""
        dumped = self.model_dump(mode="json", by_alias=True)
        chosen = {key: dumped[key] for key in sorted(keys)}
        return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()
