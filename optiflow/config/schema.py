"""Every setting, defined once: a typed, frozen pydantic class per group, each field with its default and a
docstring (the docstrings become the JSON Schema descriptions and docs/configuration.md).

The defaults are the shipped project's effective values, so params.yaml holds only what a user changes. Unknown
keys are errors (a typo must not silently fall back to a default), and every message names the key.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from pathlib import PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from optiflow.config.types import HIGHER_IS_BETTER, Choice, Label, PrimaryMetric, Runtime

# Groups that say how and where a run executes, never what it computes: read from runtime.yaml and OPTIFLOW_*
# environment variables, never from params.yaml, so changing them invalidates no stage (DVC or Prefect cache).
RUNTIME_GROUPS: tuple[str, ...] = ("tracking", "serve", "score", "orchestration", "release")

# Upper bounds: a typo (an extra zero or three) must fail at once, not exhaust the machine hours later.
MAX_WORKERS = 256  # processes or threads of any kind
MAX_BATCH_ROWS = 10_000_000  # rows handled at a time


CREDENTIALS_ERROR = "credentials"  # the error type whose value is never echoed


def no_credentials(value: str | None) -> str | None:
    """Settings are shown, logged and logged to MLflow: a value carrying a password or token (``user:pw@host`` or a
    ``?password=`` query) is refused, without repeating it; credentials come from the environment only."""
    from urllib.parse import urlsplit

    from optiflow.config.redaction import redact_uri

    if value is not None and (redact_uri(value) != value or urlsplit(value).password is not None):
        raise PydanticCustomError(
            CREDENTIALS_ERROR,
            "contains a password or token; pass credentials in the environment instead (MLFLOW_TRACKING_URI, "
            "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, PGPASSWORD, or a Prefect Secret block); the value "
            "is not repeated here",
        )
    return value


def inside_project(value: str) -> str:
    """A path the pipeline writes must stay inside the project: relative, without `..`."""
    path = PurePosixPath(value.replace("\\", "/"))
    if not value.strip() or path.is_absolute() or ".." in path.parts:
        raise ValueError("must be a path inside the project folder (relative, no '..')")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, use_attribute_docstrings=True)


class FeatureTypes(_Strict):
    """Declared column types; a column listed in neither is inferred."""

    numeric: tuple[str, ...] = ()
    """Columns read as numbers (missing values imputed with the median)."""
    categorical: tuple[str, ...] = ()
    """Columns read as categories (one-hot encoded; unknown categories are ignored at scoring)."""

    @model_validator(mode="after")
    def _disjoint(self) -> FeatureTypes:
        both = sorted(set(self.numeric) & set(self.categorical))
        if both:
            raise ValueError(f"columns declared both numeric and categorical: {both}")
        return self


class GroupParams(_Strict):
    """How rows are grouped wherever groups are compared (fairness, metric slices): a numeric column with many
    values is cut into bins, so each group holds enough rows to judge."""

    bins: dict[str, tuple[float, ...]] = Field(default_factory=dict)
    """Bin edges per numeric column, e.g. `age: [25, 40, 60]` gives <25, [25, 40), [40, 60) and >=60."""
    quantiles: int = Field(4, ge=2, le=20)
    """Quantile bins of a numeric column with more than max_levels values and no edges in bins (cut on the split
    being judged; the edges are written in the report)."""
    max_levels: int = Field(10, ge=2)
    """A numeric column with at most this many distinct values is grouped by value, a column with more is binned."""

    @field_validator("bins")
    @classmethod
    def _increasing(cls, bins: dict[str, tuple[float, ...]]) -> dict[str, tuple[float, ...]]:
        for column, edges in bins.items():
            if not edges or any(low >= high for low, high in itertools.pairwise(edges)):
                raise ValueError(f"bins for {column!r} must be a non-empty increasing list of edges, got {list(edges)}")
        return bins


class DataParams(_Strict):
    """The input table: where it is, what it holds and which column is the label. Point Optiflow at another table
    here (and in `validate:`); no code change is needed."""

    source: str
    """The table: CSV (optionally .gz/.zip/.bz2/.xz) or Parquet, relative to the folder of params.yaml."""
    sha256: str | None = None
    """Checksum the source must have, verified at ingest so a changed file cannot train silently; null skips it."""
    format: Literal["auto", "csv", "parquet"] = "auto"
    """File format of the source; auto reads .parquet / .pq as Parquet and anything else as CSV."""
    target: str
    """The label column to predict."""
    positive_label: Label
    """The target value of the positive class (what the model's probability is about)."""
    negative_label: Label
    """The target value of the negative class; any other target value fails validation."""
    id_columns: tuple[str, ...] = ()
    """Columns that identify a row: required in the table, never used as features."""
    sensitive_features: tuple[str, ...] = ()
    """Columns whose groups (and their intersections) the fairness stage compares; always used as metric slices."""
    feature_types: FeatureTypes | None = None
    """Column types; null infers them (numbers are numeric, everything else categorical)."""
    fill_missing: dict[str, float | int | str] = Field(default_factory=dict)
    """Value to fill per column before validation, for gaps that have a known meaning (e.g. not billed yet = 0)."""
    ignore_columns: tuple[str, ...] = ()
    """Columns of the table deliberately left out (free text, dates, values recorded after the outcome); ingest stops
    on any other column the settings do not name, so a new column is never silently trained on or dropped."""
    groups: GroupParams = Field(default_factory=GroupParams)
    """How numeric columns are binned into groups for fairness and slices."""

    @model_validator(mode="after")
    def _labels_differ(self) -> DataParams:
        if self.positive_label == self.negative_label:
            raise ValueError("positive_label and negative_label must differ")
        if self.target in self.id_columns:
            raise ValueError(f"target {self.target!r} is also listed in id_columns")
        return self


class ValidateParams(_Strict):
    """Data rules checked at ingest, where a failing table stops the run; monitored batches and scored rows are
    checked against them too."""

    min_rows: int = Field(1000, ge=1)
    """Fewest rows the table may have."""
    max_null_fraction: float = Field(0.0, ge=0.0, le=1.0)
    """Largest share of missing values per column, after fill_missing; override per column in null_fraction."""
    null_fraction: dict[str, float] = Field(default_factory=dict)
    """Per-column exceptions to max_null_fraction."""
    ranges: dict[str, tuple[float | None, float | None]] = Field(default_factory=dict)
    """Allowed [low, high] per numeric column; null for an open end."""
    domains: dict[str, tuple[Label, ...]] = Field(default_factory=dict)
    """Allowed values per categorical column; anything else fails validation (or is rejected at scoring)."""
    max_feature_auc: float | None = Field(0.98, gt=0.5, le=1.0)
    """Label leakage check: a feature whose single-feature ROC AUC reaches this (or 1 - this), or that is a function
    of the target, stops ingest before anything trains; null is off."""
    allow_leakage: tuple[str, ...] = ()
    """Columns the leakage check lets through by name: ones known before the outcome although they (almost) predict
    it alone."""

    @field_validator("ranges")
    @classmethod
    def _ordered(cls, ranges: dict[str, tuple[float | None, float | None]]) -> dict:
        for column, (low, high) in ranges.items():
            if low is not None and high is not None and low > high:
                raise ValueError(f"range for {column!r}: low {low} > high {high}")
        return ranges


class SplitParams(_Strict):
    """Who does what with each row. A source row's role follows from its key alone (optiflow/data/keys.py), so it
    keeps that role in every run and retraining; the seed does not change it. Train fits; valid makes every choice;
    test is scored once for the report and the gates; holdout is frozen (never trained on, in any retraining) and is
    where a challenger meets the champion; pool rows are set aside for simulated batches."""

    test_size: float = Field(0.2, gt=0.0, lt=1.0)
    """Share of rows held out as the test split: scored once, for the report and the gates; it never chooses."""
    valid_size: float = Field(0.2, gt=0.0, lt=1.0)
    """Share of rows for validation: every choice (model family, threshold, calibration, compressed variant,
    fairness mitigation) is made on it."""
    holdout_size: float = Field(0.2, gt=0.0, lt=1.0)
    """Share of rows in the frozen holdout: never trained on, in any run or retraining; the champion and a
    challenger are compared on it (and the monitoring reference is drawn from it)."""
    pool_size: float = Field(0.0, ge=0.0, lt=1.0)
    """Share of rows set aside for `optiflow simulate-drift` to draw batches from (rows no model trains on); 0 for a
    table whose new batches come from production."""
    reference_rows: int = Field(1000, ge=1)
    """Rows of the holdout sampled as the monitoring reference (its predictions are out of sample)."""

    @model_validator(mode="after")
    def _room_for_train(self) -> SplitParams:
        held = self.test_size + self.valid_size + self.holdout_size + self.pool_size
        if held >= 0.9:
            raise ValueError(
                f"test_size + valid_size + holdout_size + pool_size = {held:.2f} leaves under 10% for training"
            )
        return self


# The families a new project fits (what `optiflow init` writes into a new params file).
DEFAULT_FAMILIES: dict[str, dict[str, Any]] = {
    "logistic_regression": {"C": 1.0},
    "hist_gradient_boosting": {
        "learning_rate": 0.05,
        "max_iter": 300,
        "max_leaf_nodes": 15,
        "min_samples_leaf": 40,
        "l2_regularization": 1.0,
    },
    "mlp": {"hidden_units": 64, "hidden_layers": 2, "dropout": 0.1, "learning_rate": 0.001, "max_epochs": 100},
}


class TrainParams(_Strict):
    """The model families fitted by the train stage (each with its tuned values, when tuning found some)."""

    families: dict[str, dict[str, Any]] = Field(default=DEFAULT_FAMILIES)
    """Family -> hyperparameters (logistic_regression, hist_gradient_boosting, mlp); tuned values override these."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the PyTorch MLP trains: auto uses CUDA when torch sees a GPU, else the CPU."""
    max_rows: int | None = Field(None, ge=10)
    """Stratified cap on the train rows each family is fitted on; null fits on every row (set it for large tables)."""

    @field_validator("families")
    @classmethod
    def _at_least_one(cls, families: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        # Names and hyperparameters are checked against the estimators by optiflow.modeling.families.check_settings.
        if not families:
            raise ValueError("at least one model family is required")
        return families


class EvaluateParams(_Strict):
    """How candidates are compared on the validation split, how the chosen one is calibrated, and how its decision
    threshold is chosen."""

    primary_metric: PrimaryMetric = "roc_auc"
    """Metric that selects the best candidate on the validation split."""
    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    """Decision threshold for the label metrics when threshold_policy is fixed."""
    threshold_policy: Literal["fixed", "max_f1", "cost"] = "max_f1"
    """fixed uses threshold; max_f1 and cost choose one per candidate on the validation split."""
    cost_fp: float = Field(1.0, ge=0.0)
    """Cost policy: the price of a false positive."""
    cost_fn: float = Field(5.0, ge=0.0)
    """Cost policy: the price of a false negative (e.g. a missed churner costs more than a needless offer)."""
    calibration_bins: int = Field(10, ge=1)
    """Equal-width bins of the reliability curve and the expected calibration error."""
    calibration_folds: int = Field(2, ge=2)
    """Folds of the validation split used to choose sigmoid or isotonic calibration: each method is fitted on the
    other folds and judged on the one it did not see."""
    slices: tuple[str, ...] = ()
    """Extra columns to slice test metrics by (the sensitive features always are)."""


class DistillParams(_Strict):
    """Knowledge distillation: a small student MLP trained on a teacher's softened probabilities."""

    enabled: bool = True
    """Whether to add a distilled student to the compressed variants."""
    teacher: str = "best"
    """best = the candidate with the highest validation ROC AUC, or a family name."""
    hidden_sizes: tuple[int, ...] | None = None
    """The student's hidden layer widths; null = the widest `hidden_layers` equal layers that keep min_param_ratio."""
    hidden_layers: int = Field(1, ge=1)
    """Number of equal hidden layers when hidden_sizes is null."""
    temperature: float = Field(2.0, gt=0.0)
    """Softens the teacher's logits (higher = softer targets)."""
    alpha: float = Field(0.7, ge=0.0, le=1.0)
    """Weight of the teacher's soft labels against the true labels in the student's loss."""
    min_param_ratio: float = Field(10.0, ge=1.0)
    """The student must have at least this many times fewer parameters than the model it compresses."""

    @field_validator("hidden_sizes")
    @classmethod
    def _positive(cls, sizes: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if sizes is not None and (not sizes or min(sizes) < 1):
            raise ValueError(f"hidden_sizes needs at least one layer of width >= 1, got {list(sizes)}")
        return sizes


class MeasureParams(_Strict):
    """How every compressed variant is timed: the same way, in this process, on the same rows."""

    batch_sizes: tuple[int, ...] = (1, 4096)
    """Rows per predict call (rows are repeated to fill a large batch); each at most 1,000,000."""
    repeats: int = Field(30, ge=3, le=10_000)
    """Timed rounds per batch size, every variant called once per round in turn; p50 / p95 and the paired speed
    ratios are taken over them."""
    warmup: int = Field(5, ge=1)
    """Untimed calls first."""
    threads: int = Field(1, ge=1, le=MAX_WORKERS)
    """Torch intra-op threads while timing."""

    @field_validator("batch_sizes")
    @classmethod
    def _batch_sizes(cls, sizes: tuple[int, ...]) -> tuple[int, ...]:
        if not sizes or min(sizes) < 1 or max(sizes) > 1_000_000:
            raise ValueError(f"each batch size must lie in [1, 1000000], got {list(sizes)}")
        return sizes


class SelectParams(_Strict):
    """Which compressed variant joins evaluate: judged on the validation split (the test split is only reported)."""

    objective: Literal["latency", "size"] = "size"
    """Minimised: size (bytes) or latency (p50 at the largest batch); size by default, since timings on a shared
    machine can swap close variants from run to run."""
    speed_confidence: float = Field(0.95, gt=0.5, lt=1.0)
    """Two-sided confidence of the paired speed ratio: a variant counts as faster only when its interval clears 1x
    (else the smaller artifact is kept: of two int8 runtimes, or under the latency objective)."""
    max_auc_drop: float = Field(0.005, ge=0.0)
    """Largest ROC AUC drop against the uncompressed model a chosen variant may have."""
    max_group_drop_ratio: float = Field(2.0, ge=1.0)
    """Every sensitive group's AUC drop must stay within this many times the overall drop."""
    group_drop_floor: float = Field(0.0025, ge=0.0)
    """The overall drop used in that ratio is at least this (group metrics are noisier)."""
    min_group_size: int = Field(50, ge=1)
    """Smaller groups are reported, not judged."""


class CompressParams(_Strict):
    """Compressed variants of one trained PyTorch family (pruned, quantized, distilled), measured alike; the chosen
    one joins evaluate as a candidate."""

    family: str = "mlp"
    """The candidate to compress (a PyTorch family)."""
    sparsities: tuple[float, ...] = (0.5, 0.8)
    """Global magnitude (unstructured) pruning levels, each fine-tuned."""
    structured_keep: tuple[float, ...] = (0.5,)
    """Share of hidden neurons kept by structured pruning (the layers really shrink)."""
    quantize: bool = True
    """Add int8 dynamic quantization of the Linear layers (of the model and of each structured variant)."""
    finetune_epochs: int = Field(10, ge=1)
    """Most fine-tuning epochs after each pruning (with early stopping)."""
    distill: DistillParams = Field(default_factory=DistillParams)
    """Knowledge distillation into a small student."""
    measure: MeasureParams = Field(default_factory=MeasureParams)
    """How variants are timed."""
    select: SelectParams = Field(default_factory=SelectParams)
    """How the variant that joins evaluate is chosen."""

    @field_validator("sparsities", "structured_keep")
    @classmethod
    def _fractions(cls, values: tuple[float, ...]) -> tuple[float, ...]:
        outside = [value for value in values if not 0.0 < value < 1.0]
        if outside:
            raise ValueError(f"values must lie strictly between 0 and 1, got {outside}")
        return values


class ExplainParams(_Strict):
    """SHAP explanations of the selected model, cross-checked by permutation importance."""

    max_rows: int = Field(500, ge=1)
    """Test rows explained with SHAP."""
    background_rows: int = Field(100, ge=1)
    """Train rows used as the SHAP background (linear and model-agnostic explainers)."""
    top_k: int = Field(3, ge=0)
    """Dependence plots drawn for the top numeric columns."""
    permutation_repeats: int = Field(5, ge=1)
    """Repeats of the permutation-importance cross-check of the SHAP ranking."""
    max_rank_gap: int = Field(3, ge=0)
    """A larger gap between a column's SHAP and permutation ranks is noted in the report."""


class RegisterParams(_Strict):
    """The MLflow registered model a passing challenger becomes a version of, and its aliases."""

    model_name: str = Field(min_length=1)
    """Registered model name in the MLflow registry."""
    champion_alias: str = "champion"
    """Alias of the version that serves (what predict, serve-api and monitor load)."""
    previous_alias: str = "previous"
    """Alias of the champion a promotion replaced: what `optiflow rollback` restores."""

    @model_validator(mode="after")
    def _aliases_differ(self) -> RegisterParams:
        if self.champion_alias == self.previous_alias:
            raise ValueError(f"champion_alias and previous_alias must differ, both are {self.champion_alias!r}")
        return self


class ScoreParams(_Strict):
    """Runtime: batch scoring with `optiflow predict --input X --output Y` (and the scoring flow)."""

    chunk_rows: int = Field(50_000, ge=1, le=MAX_BATCH_ROWS)
    """Rows read, validated and scored at a time, so memory stays flat on any file size."""
    workers: int = Field(2, ge=1, le=MAX_WORKERS)
    """Chunks scored concurrently (threads, or Dask pieces with orchestration.task_runner dask)."""
    reasons: int = Field(3, ge=0)
    """Top reason codes per row (feature occlusion); 0 = none (faster)."""
    cache: bool = False
    """Reuse predictions of rows this model version already scored (a SQLite file at paths.prediction_cache)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where torch models score: auto uses CUDA when available."""
    runtime: Runtime = "auto"
    """What scores: auto = the version's ONNX graph when its parity with the Python model held at registration (else
    the Python model, with the reason logged); onnx = the graph or an error; python = always the Python model."""


class ServeParams(_Strict):
    """Runtime: the online API, `optiflow serve-api`."""

    host: str = "127.0.0.1"
    """Interface to listen on; 127.0.0.1 keeps the API on this machine."""
    port: int = Field(8000, ge=1, le=65535)
    """Port to listen on."""
    max_batch_size: int = Field(256, ge=1, le=100_000)
    """Most rows of concurrent requests scored in one predict call."""
    max_wait_ms: float = Field(2.0, ge=0.0)
    """Under load, the longest a batch waits to fill (a lone request never waits)."""
    max_body_bytes: int = Field(1_000_000, ge=1, le=100_000_000)
    """Larger request bodies get 413."""
    max_rows_per_request: int = Field(1000, ge=1, le=100_000)
    """Most rows one request may send."""
    reload_seconds: float = Field(10.0, gt=0.0)
    """How often the registry is polled for a moved champion alias."""
    cache: bool = False
    """Use the prediction cache of batch scoring, shared."""
    rate_limit_per_minute: int | None = Field(None, ge=1)
    """Requests per minute per client (its listed API key, else its address), 429 past it; null = no limit. Set it
    (e.g. 60) when others can reach the API: model extraction needs many queries."""
    probability_decimals: int | None = Field(None, ge=0, le=15)
    """Round returned probabilities (e.g. 2: rounded scores leak less to an extractor); null = full precision."""
    runtime: Runtime = "auto"
    """What answers: auto = the version's ONNX graph when its parity with the Python model held at registration
    (else the Python model, with the reason logged); onnx = the graph or an error; python = the Python model."""
    api_keys_sha256: tuple[str, ...] = ()
    """sha256 (hex) of each accepted X-API-Key: with any set, a request without a listed key gets 401 and each key
    has its own rate limit; empty = no keys (clients are told apart by address). Keys themselves never appear in
    settings or logs: hash one with `printf %s "$KEY" | sha256sum`."""
    trusted_proxies: tuple[str, ...] = ()
    """Addresses or networks (10.0.0.0/8) of reverse proxies whose X-Forwarded-For names the client; from anyone
    else the header is ignored. Empty = the peer address is the client."""
    timeout_seconds: float = Field(10.0, gt=0.0, le=300.0)
    """A client must send a whole request (headers and body) within this, or the connection is closed (408 for a
    slow body); idle keep-alive connections are closed after `keep_alive_seconds`."""
    keep_alive_seconds: int = Field(5, ge=1, le=300)
    """Seconds an idle keep-alive connection is kept open."""
    max_connections: int = Field(256, ge=1, le=100_000)
    """Concurrent connections; more get 503 at once instead of queueing without bound."""

    @field_validator("api_keys_sha256")
    @classmethod
    def _digests(cls, digests: tuple[str, ...]) -> tuple[str, ...]:
        malformed = [index for index, digest in enumerate(digests) if not re.fullmatch(r"[0-9a-f]{64}", digest)]
        if malformed:
            raise ValueError(f"entries {malformed} are not 64 lowercase hex characters (the sha256 of a key)")
        return digests

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, proxies: tuple[str, ...]) -> tuple[str, ...]:
        import ipaddress

        for proxy in proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(f"{proxy[:60]!r} is not an IP address or network") from None
        return proxies


class ReleaseParams(_Strict):
    """Runtime: how a version that passed every gate reaches traffic: at once, or as a challenger that serve-api
    scores on live requests (shadow or canary) until the release flow (`optiflow release decide`) promotes it, waits,
    or aborts; optionally only after a person approves, and watched after promotion so a degraded champion is rolled
    back."""

    mode: Literal["direct", "shadow", "canary"] = "direct"
    """direct: a passing version becomes champion at once; shadow: it gets `challenger_alias` and serve-api also
    scores every request with it, never answering with it; canary: it answers the `canary_share` of entities. The
    first version of a model (no champion yet) is always promoted directly."""
    approval: Literal["auto", "approve"] = "auto"
    """auto: the gates and the live comparison decide; approve: the release flow pauses until a person approves or
    rejects in the Prefect UI or with `optiflow approve|reject <flow-run>` (the timeout rejects)."""
    approval_timeout_hours: float = Field(24.0, gt=0.0)
    """How long a paused approval waits before it counts as rejected."""
    challenger_alias: str = "challenger"
    """Alias of the version under release (shadow or canary)."""
    canary_share: float = Field(0.1, gt=0.0, lt=1.0)
    """Share of entities the canary answers, chosen by a stable hash of their key: one entity always sees one model."""
    key_column: str | None = None
    """Request field naming the entity (the customer): it routes canary traffic and joins labels to the prediction
    log; null = the first of data.id_columns, or a hash of the row's features when there is none."""
    min_rows: int = Field(1000, ge=1)
    """Rows the challenger must have scored on live traffic before the release flow decides anything."""
    min_hours: float = Field(0.0, ge=0.0)
    """Hours a live release runs before it may be promoted (a day's cycle, say), however fast the rows arrive."""
    min_labelled_rows: int = Field(200, ge=1)
    """Labelled rows scored by both models before the realised paired AUC test counts."""
    max_auc_drop: float = Field(0.02, ge=0.0, le=1.0)
    """A challenger, or a champion promoted within `watch_hours`, whose estimated or realised ROC AUC is below the
    reference (the champion on the same rows; for a new champion, itself on the traffic of its release) by more than
    this, and beyond the noise of the figure, is aborted or rolled back."""
    max_error_rate: float = Field(0.01, ge=0.0, le=1.0)
    """Largest share of scoring calls that may fail (more aborts a canary, or rolls back a new champion)."""
    watch_hours: float = Field(72.0, ge=0.0)
    """How long after a release promotion the release flow watches the new champion."""
    prediction_log: str | None = None
    """SQLAlchemy URL of the prediction log (e.g. postgresql+psycopg2://127.0.0.1:5432/optiflow); null = SQLite at
    paths.prediction_log. Never a password: PGPASSWORD or ~/.pgpass."""
    webhook_url: str | None = None
    """Where Prefect automations POST release and monitoring events (drift, degraded, retrain started, rejected,
    approval needed, promoted, rolled back); null = no notifications. `optiflow serve` creates the automations."""

    check_urls = field_validator("prediction_log", "webhook_url")(no_credentials)


class TrackingParams(_Strict):
    """Runtime: the MLflow tracking store and registry. MLFLOW_TRACKING_URI, when set, wins over `uri`."""

    uri: str = "sqlite:///mlflow.db"
    """Tracking and registry URI; a relative sqlite path resolves against the project folder. Never a password:
    credentials come from MLFLOW_TRACKING_URI / MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD only."""
    experiment: str = "optiflow"
    """MLflow experiment the runs are logged to."""
    artifact_location: str = "mlartifacts"
    """Folder (relative to the project) for a new experiment's artifacts on a local store; a server keeps its own."""

    check_uri = field_validator("uri")(no_credentials)
    check_artifact_location = field_validator("artifact_location")(inside_project)


class DriftTest(_Strict):
    """One column's drift test: an Evidently method (or `two_sample_chisquare`) and its threshold."""

    method: str
    """p-value tests (ks, two_sample_chisquare, z, ...) flag a column below the threshold; distances (wasserstein,
    jensenshannon, ...) at or above it."""
    threshold: float = Field(gt=0.0)
    """The p-value or distance threshold."""


class MonitorParams(_Strict):
    """Drift checks on new batches (`optiflow monitor`) and when they may start a retraining
    (optiflow/monitoring/)."""

    num_method: str = "wasserstein"
    """Evidently drift method for numeric columns: a distance, not a p-value, so a 1M-row batch is not "drifted" by a
    negligible shift."""
    cat_method: str = "jensenshannon"
    """Evidently drift method for categorical columns (a distance too)."""
    num_threshold: float = Field(0.1, gt=0.0)
    """A numeric column drifted when its distance reaches this."""
    cat_threshold: float = Field(0.1, gt=0.0)
    """A categorical column drifted when its distance reaches this."""
    prediction_method: str = "wasserstein"
    """Drift method for the champion's scores on the batch against its scores on the reference."""
    prediction_threshold: float = Field(0.1, gt=0.0)
    """The scores drifted when their distance reaches this."""
    drift_share: float = Field(0.05, gt=0.0, le=1.0)
    """Retrain when this share of feature columns drifted (0.05: a single column of 19) ..."""
    severe_drift_share: float = Field(0.3, gt=0.0, le=1.0)
    """This much drift retrains even within the cool-down."""
    retrain_on_prediction_drift: bool = True
    """... or when the champion's scores drifted ..."""
    max_quality_drop: float = Field(0.05, gt=0.0, le=1.0)
    """... or when ROC AUC on a labelled batch fell this far below the champion's test ROC AUC."""
    cooldown_batches: int = Field(3, ge=0)
    """No retrain if one ran within the last N batches (0 switches this off) ..."""
    cooldown_hours: float = Field(24.0, ge=0.0)
    """... or within the last H hours (0 switches this off)."""
    min_new_rows: int = Field(500, ge=0)
    """Labelled rows since the last retrain needed to retrain."""
    window: Literal["all", "last_k", "training_plus_labelled"] = "training_plus_labelled"
    """Retraining data: all (training + every labelled batch), last_k (only the last K labelled batches) or
    training_plus_labelled (training + the batches since the last retrain). Whatever the window, the newest labelled
    batch only evaluates, the source's test and holdout rows never train, and each row key is used once. After a
    confirmed concept shift, only the labelled batches from the change on."""
    last_k: int = Field(3, ge=1)
    """K of the last_k window."""
    sample_rows: int | None = Field(100_000, ge=100)
    """Drift is checked on a seeded sample of bigger batches; null checks every row."""
    max_scale_ratio: float = Field(10.0, gt=1.0)
    """A numeric column whose mean size moves by this factor or more against the reference (units changed upstream:
    months to years, euros to cents) quarantines the batch instead of retraining on it."""
    false_alarm_rate: float = Field(0.001, gt=0.0, lt=0.5)
    """Chance that a batch drawn from the training distribution flags any column (or the scores): each column's
    p-value test runs at this rate divided by the number of tests (Bonferroni), and a distance is used instead only
    when its threshold is above what noise reaches at the batch's size."""
    drift_tests: dict[str, DriftTest] = Field(default_factory=dict)
    """Per column, a fixed test (`optiflow init` writes them); other columns get one chosen per batch by type,
    number of values and batch size."""
    trigger: Literal["performance", "drift"] = "performance"
    """performance: retrain when the estimated (or, once labelled, realised) ROC AUC drop costs more than a retrain;
    drift alone then raises an alert, not a retrain. drift: retrain on the drift thresholds above (the old rule)."""
    point_value: float = Field(0.01, ge=0.0)
    """Value of one point (0.01) of ROC AUC per row scored, in the unit of retrain_cost."""
    rows_until_retrain: int = Field(100_000, ge=0)
    """Rows expected to be scored until the next scheduled retrain: how long a drop would be paid for."""
    retrain_cost: float = Field(500.0, ge=0.0)
    """Cost of one retraining (compute, review), in the unit of point_value."""
    noise_z: float = Field(2.0, gt=0.0)
    """A performance drop or gap counts only beyond this many standard errors (noise is not signal)."""
    estimate_draws: int = Field(400, ge=50)
    """Simulated label draws behind each estimated metric's 95% band."""

    @model_validator(mode="after")
    def _severe_above_threshold(self) -> MonitorParams:
        if self.severe_drift_share < self.drift_share:
            raise ValueError(f"severe_drift_share {self.severe_drift_share} is below drift_share {self.drift_share}")
        return self


Condition = Label | tuple[float | None, float | None]  # a value, or a [low, high] range (null: open end)


class Scenario(_Strict):
    """One drifted batch the simulator writes, naming the columns it changes."""

    name: str
    """The batch's name (written as NNN-name.parquet)."""
    kind: Literal["scale", "mix", "segment"]
    """scale: multiply a numeric column (and move some labels); mix: one value of a categorical column becomes a
    share of the batch; segment: rows matching `where` become a share of the batch."""
    column: str | None = None
    """scale: the numeric column; mix: the categorical column."""
    factor: float | None = Field(None, gt=0.0)
    """scale: the multiplier (1.25 is a 25% rise; 0.0833 reports months as years)."""
    value: Label | None = None
    """mix: the value whose share becomes `share`."""
    share: float | None = Field(None, gt=0.0, le=1.0)
    """mix and segment: the share of the batch."""
    where: dict[str, Condition] = Field(default_factory=dict)
    """segment: the rows of the segment; scale: the rows whose labels `relabel` moves (all rows when empty)."""
    relabel: float | None = Field(None, gt=0.0, le=1.0)
    """scale: share of the negative rows matching `where` that turn positive (e.g. price-sensitive customers churn)."""

    @model_validator(mode="after")
    def _complete(self) -> Scenario:
        needs = {"scale": ("column", "factor"), "mix": ("column", "value", "share"), "segment": ("where", "share")}
        missing = [key for key in needs[self.kind] if getattr(self, key) in (None, {})]
        if missing:
            raise ValueError(f"scenario {self.name!r} of kind {self.kind} needs {missing}")
        return self

    def columns(self) -> tuple[str, ...]:
        """Every column the scenario names."""
        return tuple(dict.fromkeys([*([self.column] if self.column else []), *self.where]))


class SimulateParams(_Strict):
    """Synthetic drifted labelled batches drawn from the pool, rows no model trains on (`optiflow simulate-drift`)."""

    batch_rows: int = Field(500, ge=10, le=MAX_BATCH_ROWS)
    """Rows per batch, drawn without replacement from the pool (split.pool_size); at most the pool's rows."""
    control_batches: int = Field(1, ge=0)
    """Undrifted batches."""
    scenarios: tuple[Scenario, ...] | None = None
    """The drifted batches, each naming its columns; null derives them from the data (a numeric column rises 25%,
    a rare category becomes the majority, the rows with the lowest values of a numeric column become most of the
    batch). `optiflow init` writes them out."""
    gradual_scenario: str | None = None
    """The scale scenario of the gradual series; null takes the first scale scenario."""
    gradual_batches: int = Field(10, ge=0)
    """Length of a series whose scale grows linearly ..."""
    gradual_max_increase: float = Field(0.4, gt=0.0)
    """... from no change to a factor of 1 + this (labels move in proportion), to measure detection delay."""

    @model_validator(mode="after")
    def _unique_names(self) -> SimulateParams:
        names = [scenario.name for scenario in self.scenarios or ()]
        repeated = sorted({name for name in names if names.count(name) > 1} | ({"control"} & set(names)))
        if repeated:
            raise ValueError(f"scenario names must be unique and not 'control': {repeated}")
        return self


BACKTEST_SCENARIOS = (
    "control",
    "sudden_covariate",
    "gradual_covariate",
    "prior",
    "concept",
    "seasonal",
    "upstream_break",
)
BACKTEST_POLICIES = ("never", "every_k", "drift_share", "estimated_performance", "oracle")


class BacktestParams(_Strict):
    """`optiflow backtest`: a long keyed stream replayed through the monitoring and training core under each
    retraining policy and shift scenario (optiflow/monitoring/backtest.py)."""

    batches: int = Field(60, ge=2, le=10_000)
    """Batches in the stream (one a day)."""
    batch_rows: int = Field(1000, ge=10, le=MAX_BATCH_ROWS)
    """Rows per batch."""
    label_delay: int = Field(3, ge=0)
    """Batches until a batch's labels arrive (the oracle policy gets them at once)."""
    shift_at: int = Field(20, ge=1)
    """First changed batch of every scenario but control."""
    every_k: int = Field(10, ge=1)
    """k of the every-k policy (retrain every k batches)."""
    family: str = "logistic_regression"
    """The family each policy retrains (its train.families hyperparameters, no tuning)."""
    scenarios: tuple[Literal[BACKTEST_SCENARIOS], ...] = BACKTEST_SCENARIOS  # type: ignore[valid-type]
    """The shift scenarios replayed."""
    policies: tuple[Literal[BACKTEST_POLICIES], ...] = BACKTEST_POLICIES  # type: ignore[valid-type]
    """The retraining policies compared."""
    draws: int = Field(200, ge=50)
    """Label draws behind each estimated-performance band."""

    @model_validator(mode="after")
    def _shift_inside(self) -> BacktestParams:
        if self.shift_at >= self.batches:
            raise ValueError(f"shift_at {self.shift_at} must lie inside the {self.batches} batches")
        return self


class OrchestrationParams(_Strict):
    """Runtime: where independent pieces of a stage run (tuning shares, compression variants, batch-scoring chunks):
    Prefect's thread pool in this process, or Dask workers through prefect-dask."""

    task_runner: Literal["threads", "dask"] = "threads"
    """threads (Prefect thread pool, this process) or dask (prefect-dask workers)."""
    dask_address: str | None = None
    """tcp://host:8786 of a running Dask scheduler; null starts a LocalCluster."""
    dask_workers: int = Field(2, ge=1, le=MAX_WORKERS)
    """LocalCluster worker processes (when dask_address is null)."""
    threads_per_worker: int = Field(1, ge=1, le=MAX_WORKERS)
    """Threads per Dask worker process."""
    tune_workers: int | None = Field(None, ge=1, le=MAX_WORKERS)
    """Prefect tasks sharing each study's trials; null = 1 with threads, dask_workers with dask. More than 1 needs
    shared storage (tune.storage, or a throwaway Optuna journal file when it is null and the cluster is local)."""

    @field_validator("dask_address")
    @classmethod
    def _scheduler_url(cls, address: str | None) -> str | None:
        no_credentials(address)
        if address is not None and not address.startswith(("tcp://", "tls://", "ws://", "wss://")):
            raise ValueError(f"expected a Dask scheduler address like tcp://host:8786, got {address!r}")
        return address

    @property
    def workers(self) -> int:
        """Parallel shares per study: tune_workers, or one per Dask worker with dask, one with threads."""
        if self.tune_workers is not None:
            return self.tune_workers
        return self.dask_workers if self.task_runner == "dask" else 1


# The reports a pipeline run writes, by paths key: register reads them and each registered version links to them.
RUN_REPORTS = (
    "validation",
    "compression",
    "compression_plots",
    "metrics",
    "plots",
    "evaluation",
    "fairness",
    "fairness_table",
    "explain",
)
REPORT_KEYS = (*RUN_REPORTS, "run_report")  # ... and the run report register itself writes
# Run reports holding timings measured on this machine (compress: latency per variant, its plot and table). They
# differ on every run, so they are no DVC outputs, and a stage DVC restores from its run cache leaves them unwritten.
TIMING_REPORTS = ("compression", "compression_plots")


class PathsParams(_Strict):
    """Every file or folder a stage reads or writes, relative to the project folder; dvc.yaml is rendered with these
    values (re-render it with `optiflow dvc-yaml` after changing one)."""

    dataset: str = "data/interim/dataset.parquet"
    """The validated, typed table ingest publishes."""
    validation: str = "reports/validation"
    """Ingest's validation report (HTML and JSON)."""
    validation_failures: str = "reports/validation-failures"
    """The report of a table that failed validation (the last good outputs stay)."""
    train: str = "data/processed/train.parquet"
    """Train split."""
    valid: str = "data/processed/valid.parquet"
    """Validation split."""
    test: str = "data/processed/test.parquet"
    """Test split."""
    holdout: str = "data/processed/holdout.parquet"
    """The frozen holdout: champion and challenger are compared on it."""
    pool: str = "data/processed/pool.parquet"
    """Rows set aside for simulated batches (split.pool_size); empty when the pool is 0."""
    reference: str = "data/reference/reference.parquet"
    """Monitoring reference: a sample of the holdout."""
    tuning: str = "models/tuning"
    """Best hyperparameters per family, trial tables and plots."""
    candidates: str = "models/candidates"
    """One fitted model per family."""
    compressed: str = "models/compressed"
    """The chosen compressed variant."""
    selected: str = "models/selected"
    """The candidate chosen on the validation split, calibrated: what is tested, registered and served."""
    compression: str = "reports/compression.json"
    """Compression metrics of every variant, with latencies timed on this machine (so not a DVC out: it changes
    every run)."""
    compression_plots: str = "reports/compression"
    """Compression plots and variant table (timings included: not a DVC out)."""
    metrics: str = "reports/test_metrics.json"
    """Test metrics of every candidate, the selection and its threshold: the full record later stages read."""
    headline: str = "reports/metrics.json"
    """The headline figures (DVC metrics, kept in git): the registered model's test metrics, its gates, latency and
    size, under the names its MLflow run uses."""
    evaluation: str = "reports/evaluation"
    """Evaluation tables (slices, calibration, the ROC/PR curve points and the confusion rows)."""
    plots: str = "reports/plots"
    """Evaluation plots as PNG (ROC, PR, confusion): `dvc plots show` renders them without network."""
    fairness: str = "reports/fairness.json"
    """Fairness report and gate results."""
    fairness_table: str = "reports/fairness.csv"
    """Per-group fairness metrics."""
    explain: str = "reports/explain"
    """SHAP and permutation-importance report and plots."""
    registration: str = "reports/registration.json"
    """What register decided, every gate and the registered version."""
    run_report: str = "reports/run_report.html"
    """The single-file HTML report of the champion's run: replaced only when a run's version is promoted."""
    runs: str = "reports/runs"
    """One folder per registered version (v3/run_report.html, v3/registration.json), rejected ones included."""
    monitoring: str = "reports/monitoring"
    """One folder per monitored batch: drift HTML/JSON, validation, summary."""
    monitoring_history: str = "reports/monitoring/history.csv"
    """One row per monitored batch; history.png is drawn next to it."""
    batches: str = "data/batches"
    """New batches to monitor (CSV or Parquet); simulate-drift writes here."""
    scored: str = "data/scored"
    """Scores of each batch in paths.batches (`<batch id>.csv`, rejects beside it), written by the scoring flow run
    without an input (the scheduled scoring deployment)."""
    monitored: str = "data/monitored"
    """Validated labelled batches kept for the retraining windows."""
    quarantine: str = "data/quarantine"
    """Batches that failed validation or look broken upstream, with their reason; never trained on until released
    (`optiflow quarantine`)."""
    retraining: str = "data/retraining"
    """The retraining dataset built by the window policy."""
    prediction_cache: str = "cache/predictions.sqlite"
    """The prediction cache of batch scoring and serving (score.cache, serve.cache)."""
    prediction_log: str = "logs/predictions.sqlite"
    """serve-api's prediction log (every answer and shadow score, with its key) and joined labels, when
    release.prediction_log is null."""
    release: str = "reports/release"
    """The release flow's comparison page and decision record."""

    check_paths = field_validator("*")(inside_project)


class FairnessParams(_Strict):
    """fairlearn group metrics of the selected model on test; a threshold set to null switches that gate off."""

    max_demographic_parity_difference: float | None = Field(None, ge=0.0, le=1.0)
    """Largest gap in selection rate between groups; off by default: churn base rates differ between the groups
    here, so equal selection rates are not the goal."""
    min_demographic_parity_ratio: float | None = Field(None, ge=0.0, le=1.0)
    """Smallest ratio of the lowest to the highest group selection rate."""
    max_equalized_odds_difference: float | None = Field(0.3, ge=0.0, le=1.0)
    """Largest TPR or FPR gap between the groups of each sensitive feature and of their intersection."""
    min_group_size: int = Field(50, ge=1)
    """Smaller groups are reported but not gated (their rates are noise)."""
    mitigate: bool = True
    """When a gate fails, fit a mitigation on the validation split and report it on test (it is not registered)."""
    mitigation: Literal["threshold_optimizer"] = "threshold_optimizer"
    """The mitigation: fairlearn's ThresholdOptimizer (group-specific thresholds)."""
    constraint: Literal["demographic_parity", "equalized_odds"] = "equalized_odds"
    """The fairness constraint the mitigation enforces."""


class ChampionGateParams(_Strict):
    """The paired comparison a challenger must pass against the champion: both models score the same holdout rows,
    none of which either trained on; the confidence interval of (challenger - champion) ROC AUC decides."""

    method: Literal["delong", "bootstrap"] = "delong"
    """delong (DeLong's variance of the paired AUC difference, exact and instant) or bootstrap (paired percentile
    bootstrap over the holdout rows)."""
    confidence: float = Field(0.99, gt=0.5, lt=1.0)
    """Two-sided confidence of the interval; its lower bound is what must clear the bar. 0.99 rather than 0.95:
    models trained the same way with other seeds differ a little for real, and bench/decisions.py measured 7% of
    such equal pairs promoted at 0.95 against 2.5% at 0.99 (a +0.02 gain is still promoted 3 times in 4)."""
    margin: float = Field(0.01, ge=0.0, lt=1.0)
    """Non-inferiority margin: the lower bound must stay above -margin (the challenger is not worse by more)."""
    superiority: bool = True
    """Also require the lower bound above 0 (the challenger shown better). On, equal models are promoted at most
    at the interval's one-sided error rate; off, any challenger not shown worse than the margin is promoted."""
    resamples: int = Field(2000, ge=100)
    """Resamples of the paired bootstrap (method bootstrap)."""


class GateParams(_Strict):
    """Every check a new version must pass to become champion (all are reported); null switches a check off."""

    min_quality: dict[str, float] = Field({"roc_auc": 0.80, "pr_auc": 0.55})
    """Smallest test value per metric (roc_auc, pr_auc, f1, accuracy, neg_log_loss, neg_brier)."""
    max_latency_ms_per_1k_rows: float | None = Field(500.0, gt=0.0)
    """Largest median predict_proba time per 1,000 test rows, after warm-up."""
    max_model_bytes: int | None = Field(5_000_000, gt=0)
    """Largest size of the saved model file."""
    champion: ChampionGateParams = Field(default_factory=ChampionGateParams)
    """The paired test against the champion on the holdout."""
    guard_tolerances: dict[str, float] = Field({"neg_brier": 0.01, "accuracy": 0.02})
    """Per metric, how far it may drop below the champion's, both scored on the same holdout rows."""
    max_flip_rate: float | None = Field(0.1, ge=0.0, le=1.0)
    """Largest share of test rows whose label the robustness search attack can flip."""
    max_auc_drop: float | None = Field(0.1, ge=0.0, le=1.0)
    """Largest ROC AUC loss when every row is pushed towards the wrong answer within the robustness bounds."""
    allow_not_evaluated: tuple[Literal["fairness", "robustness"], ...] = ()
    """Gates that may release a version although they could not check anything (fairness: no sensitive feature or
    no two groups large enough; robustness: no column to perturb). By default such a gate blocks the release."""

    @model_validator(mode="before")
    @classmethod
    def _replaced_min_delta(cls, values: Any) -> Any:
        if isinstance(values, dict) and "min_delta" in values:
            raise ValueError(
                "min_delta was replaced by the paired test gates.champion (method, confidence, margin, superiority): "
                "a point difference of 0.001 is far below the noise of ROC AUC; remove min_delta"
            )
        return values

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


class Bound(_Strict):
    """How far one numeric column may plausibly move: a relative or an absolute bound."""

    relative: float | None = Field(None, gt=0.0, lt=1.0)
    """Plus or minus this fraction of the value."""
    absolute: float | None = Field(None, gt=0.0)
    """Plus or minus this many units."""
    non_negative: bool = True
    """Clip at 0: a charge or a tenure is never negative."""


class RobustnessParams(_Strict):
    """The selected model under small, plausible input changes (checked in the register stage, gated by gates)."""

    bounds: dict[str, Bound] = Field(default_factory=dict)
    """Per numeric column: its relative or absolute bound; columns not listed are left unchanged."""
    random_draws: int = Field(5, ge=1, le=1000)
    """Random perturbations per row (honest noise)."""
    search_levels: int = Field(3, ge=2, le=5)
    """Search attack: values tried per column in [-bound, +bound], all combinations; 3 = corners and centre."""
    max_rows: int = Field(500, ge=1)
    """Test rows evaluated."""


class ParamSpec(_Strict):
    """One hyperparameter's search range: a float or int interval (optionally log-scaled) or a list of choices."""

    type: Literal["float", "int", "categorical"]
    """float or int for an interval, categorical for a list of choices."""
    low: float | int | None = None
    """Lower end of the interval (float and int)."""
    high: float | int | None = None
    """Upper end of the interval (float and int)."""
    log: bool = False
    """Sample the interval on a log scale (needs low > 0)."""
    choices: tuple[Choice, ...] | None = None
    """The values to choose from (categorical)."""

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


# The search space of each built-in family (validated into ParamSpec like a params.yaml entry).
DEFAULT_SPACES: dict[str, dict[str, dict[str, Any]]] = {
    "logistic_regression": {
        "C": {"type": "float", "low": 0.001, "high": 100.0, "log": True},
        "l1_ratio": {"type": "float", "low": 0.0, "high": 1.0},  # 0 = L2, 1 = L1, between = elastic net
        "solver": {"type": "categorical", "choices": ["saga"]},
    },
    "hist_gradient_boosting": {
        "learning_rate": {"type": "float", "low": 0.01, "high": 0.3, "log": True},
        "max_leaf_nodes": {"type": "int", "low": 8, "high": 64, "log": True},
        "max_depth": {"type": "int", "low": 2, "high": 8},
        "min_samples_leaf": {"type": "int", "low": 10, "high": 200, "log": True},
        "l2_regularization": {"type": "float", "low": 0.001, "high": 10.0, "log": True},
        "max_iter": {"type": "int", "low": 100, "high": 500},
        "early_stopping": {"type": "categorical", "choices": [True]},
    },
    "mlp": {
        "hidden_units": {"type": "int", "low": 16, "high": 128, "log": True},
        "learning_rate": {"type": "float", "low": 0.0003, "high": 0.01, "log": True},
        "weight_decay": {"type": "float", "low": 0.000001, "high": 0.01, "log": True},
        "dropout": {"type": "float", "low": 0.0, "high": 0.3},
    },
}


class TuneParams(_Strict):
    """Optuna search of each family's hyperparameters by cross-validation on the train split; `train` then fits
    each family's best values."""

    sampler: Literal["grid", "random", "tpe"] = "tpe"
    """grid, random or tpe (Bayesian)."""
    n_trials: int = Field(20, ge=1, le=10_000)
    """Trials per family."""
    timeout: float | None = Field(None, gt=0)
    """Seconds per family; null = no limit."""
    cv_folds: int = Field(3, ge=2, le=50)
    """Stratified k-fold CV on the train split only."""
    pruner: Literal["median", "successive_halving", "none"] = "median"
    """Stops unpromising trials early (the folds are its intermediate values)."""
    n_jobs: int = Field(1, ge=1, le=MAX_WORKERS)
    """Trials in parallel threads; above 1 TPE's proposals depend on thread timing (results are no longer
    reproducible), and bench/tuning.py measured no speed-up."""
    threads_per_trial: int | None = Field(1, ge=1, le=MAX_WORKERS)
    """Native (OpenMP/BLAS) threads per trial; null = cores / n_jobs. 1 by default: a 2-thread OpenMP fit stalls
    8-70x whenever another process holds a core (bench/tuning.py), while trials in parallel use the cores well."""
    storage: str | None = None
    """Optuna storage: null = in memory; sqlite:///optuna.db or any SQLAlchemy URL to resume or share studies (never
    a password: PostgreSQL reads PGPASSWORD); journal:///path/study.journal is an Optuna journal file (fast for
    processes of one machine)."""
    max_rows: int | None = Field(None, ge=10)
    """Stratified cap on the train rows a study cross-validates on; null = every train row (set it for large
    tables)."""
    grid_points: int = Field(4, ge=2, le=100)
    """Values per continuous range for grid search."""
    multi_objective: bool = False
    """true: ROC AUC against latency with NSGA-II, reported as a Pareto front."""
    spaces: dict[str, dict[str, ParamSpec]] = Field(default=DEFAULT_SPACES, validate_default=True)
    """Family -> hyperparameter -> search range. A family without an entry is not tuned (its train.families values
    are used). Setting this replaces the default spaces as a whole."""

    check_storage = field_validator("storage")(no_credentials)


class Params(_Strict):
    """Every setting of a project: params.yaml (what changes results), runtime.yaml and OPTIFLOW_* environment
    variables (the runtime groups), and these defaults."""

    seed: int = 42
    """Seeds every random step (split, tuning, training, sampling), so a run can be repeated exactly."""
    data: DataParams
    """The input table."""
    validation: ValidateParams = Field(default_factory=ValidateParams, alias="validate")
    """Data rules checked at ingest."""
    split: SplitParams = Field(default_factory=SplitParams)
    """Train / validation / test split."""
    tune: TuneParams = Field(default_factory=TuneParams)
    """Hyperparameter search."""
    train: TrainParams = Field(default_factory=TrainParams)
    """Model families and their hyperparameters."""
    compress: CompressParams = Field(default_factory=CompressParams)
    """Compressed variants of the PyTorch family."""
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    """Metrics, model selection and decision thresholds."""
    fairness: FairnessParams = Field(default_factory=FairnessParams)
    """Fairness gates and mitigation."""
    explain: ExplainParams = Field(default_factory=ExplainParams)
    """SHAP explanations."""
    robustness: RobustnessParams = Field(default_factory=RobustnessParams)
    """Input perturbation checks."""
    gates: GateParams = Field(default_factory=GateParams)
    """What a challenger must reach to become champion."""
    registry: RegisterParams = Field(alias="register")
    """The MLflow registered model."""
    score: ScoreParams = Field(default_factory=ScoreParams)
    """Runtime: batch scoring."""
    serve: ServeParams = Field(default_factory=ServeParams)
    """Runtime: the online API."""
    release: ReleaseParams = Field(default_factory=ReleaseParams)
    """Runtime: how a passing version reaches traffic: direct, shadow or canary, with or without approval."""
    tracking: TrackingParams = Field(default_factory=TrackingParams)
    """Runtime: the MLflow tracking store."""
    monitor: MonitorParams = Field(default_factory=MonitorParams)
    """Drift checks and retraining decisions."""
    simulate: SimulateParams = Field(default_factory=SimulateParams)
    """Synthetic drifted batches."""
    backtest: BacktestParams = Field(default_factory=BacktestParams)
    """The retraining-policy backtest (`optiflow backtest`)."""
    orchestration: OrchestrationParams = Field(default_factory=OrchestrationParams)
    """Runtime: where parallel pieces run."""
    paths: PathsParams = Field(default_factory=PathsParams)
    """Files and folders the stages read and write."""

    def subset_hash(self, keys: tuple[str, ...]) -> str:
        """Stable hash of the named top-level groups: the cache key of a stage's configuration."""
        dumped = self.model_dump(mode="json", by_alias=True)
        chosen = {key: dumped[key] for key in sorted(keys)}
        return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()
