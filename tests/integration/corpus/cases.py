"""The bad-input corpus: each case writes one malformed input into a trained project and names the entry point it
goes through, the error class it must raise and the fragments the message must contain (file, column, rule,
observed value). A case with no error is a documented safe handling, with a check of what "safe" means.

Entry points: "config" (load params.yaml), "columns" (params.yaml checked against the data's header, what `optiflow
train` does before Prefect starts), "ingest" (the first training stage: read, type, validate, publish) and "score"
(batch scoring with the registered champion: ``optiflow.serving.batch.score_batch``, what `optiflow predict` and
the scoring flow run). A safe scoring case says what must come out (``Scored``): which rows are rejected with which
reason, and the values the model must see for every other row.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from optiflow.config import RUNTIME_GROUPS
from optiflow.data.validation import LEAKAGE
from optiflow.errors import ConfigError, DataError, IntegrityError, OptiflowError, ValidationFailed
from tests.conftest import shipped_params


@dataclass(frozen=True)
class Bad:
    """What a case wrote: the params file to run with, the input file it points to (None for config cases), the
    runtime settings to run with (``score.chunk_rows``: -S overrides, since params.yaml holds no runtime group) and,
    for a scoring case about where results go, the output it asks for (relative to the project)."""

    params: Path
    source: str | None
    overrides: Mapping[str, object] = field(default_factory=dict)
    output: str | None = None


@dataclass(frozen=True)
class Scored:
    """The documented outcome of a safe scoring case: rejected rows (by row number) with their reason, and the rows
    as the model must see them (clean values, ``data.fill_missing`` applied): every other row is scored from these."""

    seen: pd.DataFrame
    rejects: dict[int, str]
    chunks: int = 1


@dataclass(frozen=True)
class Case:
    name: str
    entry: str  # config | ingest | score
    error: type[OptiflowError] | None  # None: documented safe handling
    fragments: tuple[str, ...]  # must all appear in the message, as must the file name
    write: Callable[[Path, pd.DataFrame], Bad]
    scored: Callable[[pd.DataFrame], Scored] | None = None  # safe "score" cases: the outcome, from the clean sample
    hidden: tuple[str, ...] = ()  # must not appear in the message (a password, a line of another file)


def params_with(root: Path, name: str, source: str | None = None, **changes: object) -> Path:
    """A copy of the project's params.yaml with ``data.source`` and dotted keys (``split.test_size``) changed."""
    raw = yaml.safe_load((root / "params.yaml").read_text())
    if source is not None:
        raw["data"]["source"] = source
    for dotted, value in changes.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    path = root / f"params-{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _bad_path(root: Path, name: str, suffix: str) -> tuple[Path, str]:
    relative = f"data/bad/{name}{suffix}"
    (root / "data/bad").mkdir(parents=True, exist_ok=True)
    return root / relative, relative


def frame_case(name: str, change: Callable[[pd.DataFrame], pd.DataFrame], **params: object) -> Callable:
    """The sample changed by ``change``, written as CSV."""

    def write(root: Path, sample: pd.DataFrame) -> Bad:
        path, relative = _bad_path(root, name, ".csv")
        change(sample.copy()).to_csv(path, index=False)
        runtime = {key: value for key, value in params.items() if key.split(".")[0] in RUNTIME_GROUPS}
        in_file = {key: value for key, value in params.items() if key not in runtime}
        return Bad(params_with(root, name, relative, **in_file), relative, runtime)

    return write


def bytes_case(name: str, suffix: str, content: Callable[[pd.DataFrame], bytes], **params: object) -> Callable:
    def write(root: Path, sample: pd.DataFrame) -> Bad:
        path, relative = _bad_path(root, name, suffix)
        path.write_bytes(content(sample.copy()))
        return Bad(params_with(root, name, relative, **params), relative)

    return write


def parquet_case(name: str, change: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable:
    def write(root: Path, sample: pd.DataFrame) -> Bad:
        path, relative = _bad_path(root, name, ".parquet")
        change(sample.copy()).to_parquet(path, index=False)
        return Bad(params_with(root, name, relative), relative)

    return write


def params_text_case(name: str, text: str) -> Callable:
    def write(root: Path, sample: pd.DataFrame) -> Bad:
        path = root / f"params-{name}.yaml"
        path.write_text(text)
        return Bad(path, None)

    return write


def params_change_case(name: str, **changes: object) -> Callable:
    def write(root: Path, sample: pd.DataFrame) -> Bad:
        return Bad(params_with(root, name, **changes), None)

    return write


def output_case(name: str, output: str, source: str | None = None) -> Callable:
    """A clean scoring batch (at ``source``, default data/bad/<name>.csv) scored into ``output``: where results may
    not go is the bad input."""

    def write(root: Path, sample: pd.DataFrame) -> Bad:
        relative = source or f"data/bad/{name}.csv"
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        sample.drop(columns=["churn"]).to_csv(root / relative, index=False)
        if output == "symlink-to-params":
            (root / "data/bad/scores.csv").symlink_to(root / "params.yaml")
            return Bad(params_with(root, name), relative, output="data/bad/scores.csv")
        return Bad(params_with(root, name), relative, output=output.format(source=relative))

    return write


def runtime_case(name: str, **overrides: str) -> Callable:
    """The project's params.yaml with runtime settings given as -S would give them (text read as YAML)."""

    def write(root: Path, sample: pd.DataFrame) -> Bad:
        return Bad(params_with(root, name), None, overrides)

    return write


def not_a_params_file(root: Path, sample: pd.DataFrame) -> Bad:
    """--params naming some other file (a key file, a shell profile): its lines must not end up in the error."""
    path, _ = _bad_path(root, "not-params", ".yaml")
    path.write_text("export API_TOKEN=do-not-print-me\nprivate: [key material\n")
    return Bad(path, None)


def tampered_source(root: Path, sample: pd.DataFrame) -> Bad:
    """The file params.yaml pins by sha256, edited afterwards (one charge changed)."""
    import hashlib

    path, relative = _bad_path(root, "tampered", ".csv")
    sample.to_csv(path, index=False)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    sample.assign(monthly_charges=sample["monthly_charges"].where(sample.index != 0, 1.0)).to_csv(path, index=False)
    return Bad(params_with(root, "tampered", relative, **{"data.sha256": digest}), relative)


def _rows(frame: pd.DataFrame, column: str, rows: slice, value: object) -> pd.DataFrame:
    frame[column] = frame[column].astype(object)
    frame.loc[frame.index[rows], column] = value
    return frame


def _with_commas(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(total_charges=frame["total_charges"].map(lambda v: f"{v:,.2f}"))


def _csv_bytes(frame: pd.DataFrame, **options: object) -> bytes:
    return frame.to_csv(index=False, **options).encode("utf-8")


def _truncated_gzip(frame: pd.DataFrame) -> bytes:
    whole = gzip.compress(_csv_bytes(frame))
    return whole[: len(whole) // 2]


def _latin1(frame: pd.DataFrame) -> bytes:
    frame = _rows(frame, "payment_method", slice(40, 41), "Chèque électronique")
    return frame.to_csv(index=False).encode("latin-1")


def _garbage(frame: pd.DataFrame) -> bytes:
    return np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()


def _repeated_header(frame: pd.DataFrame, column: str) -> bytes:
    """The CSV with the name ``column`` also given to the next column (pandas would rename it silently)."""
    names = list(frame.columns)
    names[names.index(column) + 1] = column
    return _csv_bytes(frame.set_axis(names, axis=1))


CATEGORICAL = shipped_params()["data"]["feature_types"]["categorical"]


def _batch_case(name: str, change: Callable[[pd.DataFrame], pd.DataFrame], **params: object) -> Callable:
    """A scoring batch: the sample without its target, changed by ``change``, written as CSV."""
    return frame_case(name, lambda f: change(f.drop(columns=["churn"])), **params)


def _thousands(frame: pd.DataFrame) -> pd.DataFrame:
    """total_charges exported with thousands separators (``1,234.5``); a missing value stays empty."""
    return frame.assign(total_charges=frame["total_charges"].map(lambda v: v if pd.isna(v) else f"{v:,}"))


NAN_INF_ROWS = {"monthly_nan": range(0, 5), "total_inf": range(5, 7), "total_minus_inf": range(7, 8)}
FILLED_ROWS = range(8, 10)  # total_charges missing: data.fill_missing gives 0.0 and the row is scored


def _nan_inf(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.astype({"monthly_charges": object, "total_charges": object})
    frame.loc[list(NAN_INF_ROWS["monthly_nan"]), "monthly_charges"] = np.nan
    frame.loc[list(NAN_INF_ROWS["total_inf"]), "total_charges"] = np.inf
    frame.loc[list(NAN_INF_ROWS["total_minus_inf"]), "total_charges"] = -np.inf
    frame.loc[list(FILLED_ROWS), "total_charges"] = np.nan
    return frame


def _nan_inf_scored(sample: pd.DataFrame) -> Scored:
    seen = sample.copy()
    seen.loc[list(FILLED_ROWS), "total_charges"] = 0.0
    rejects = dict.fromkeys(NAN_INF_ROWS["monthly_nan"], "monthly_charges: missing")
    rejects |= dict.fromkeys(NAN_INF_ROWS["total_inf"], "total_charges: inf is not a finite number")
    rejects |= dict.fromkeys(NAN_INF_ROWS["total_minus_inf"], "total_charges: -inf is not a finite number")
    return Scored(seen, rejects)


UNSEEN_REASON = "contract: 'Quarterly' not in the allowed values"
BIG_BATCH_CHUNK_ROWS = 4000  # the 15,000-row batch is read in four chunks


CASES: tuple[Case, ...] = (
    # --- columns
    Case(
        "missing-column",
        "ingest",
        DataError,
        ("missing required column(s) ['tenure']",),
        frame_case("missing-column", lambda f: f.drop(columns=["tenure"])),
    ),
    Case(
        "renamed-column",
        "ingest",
        DataError,
        ("missing required column(s) ['tenure']", "present but not declared: ['Tenure']"),
        frame_case("renamed-column", lambda f: f.rename(columns={"tenure": "Tenure"})),
    ),
    Case(
        "missing-target",
        "ingest",
        DataError,
        ("missing required column(s) ['churn']",),
        frame_case("missing-target", lambda f: f.drop(columns=["churn"])),
    ),
    Case(
        "repeated-column-name",
        "ingest",
        DataError,
        ("column name(s) ['tenure'] appear more than once in the header",),
        bytes_case("repeated-column-name", ".csv", lambda f: _repeated_header(f, "tenure")),
    ),
    Case(
        "undeclared-column",
        "ingest",
        DataError,
        ("undeclared column(s) ['churn_score_v2', 'notes']", "data.ignore_columns"),
        frame_case(
            "undeclared-column", lambda f: f.assign(notes="called twice", churn_score_v2=(f["churn"] == "Yes") * 1.0)
        ),
    ),
    Case(
        "hidden-target-copy",
        "ingest",
        ValidationFailed,
        ("column 'account_status'", LEAKAGE, "a function of the target: 'No' -> 'open', 'Yes' -> 'closed'"),
        frame_case(
            "hidden-target-copy",
            lambda f: f.assign(account_status=f["churn"].map({"Yes": "closed", "No": "open"})),
            **{"data.feature_types.categorical": [*CATEGORICAL, "account_status"]},
        ),
    ),
    # --- types
    Case(
        "text-in-numeric",
        "ingest",
        DataError,
        ("'monthly_charges' is declared numeric", "'twenty'"),
        frame_case("text-in-numeric", lambda f: _rows(f, "monthly_charges", slice(0, 3), "twenty")),
    ),
    Case(
        "numbers-with-commas",
        "ingest",
        DataError,
        ("'total_charges' is declared numeric", ","),
        frame_case("numbers-with-commas", _with_commas),
    ),
    Case(
        "words-in-binary-column",
        "ingest",
        ValidationFailed,
        ("column 'senior_citizen'", "expect_column_values_to_be_in_set", "'no'"),
        frame_case(
            "words-in-binary-column", lambda f: f.assign(senior_citizen=f["senior_citizen"].map({0: "no", 1: "yes"}))
        ),
    ),
    # --- values
    Case(
        "all-null-column",
        "ingest",
        ValidationFailed,
        ("column 'monthly_charges'", "expect_column_values_to_not_be_null", "1500 unexpected (100.00%)"),
        frame_case("all-null-column", lambda f: f.assign(monthly_charges=np.nan)),
    ),
    Case(
        "constant-column",
        "ingest",
        ValidationFailed,
        ("column 'contract'", "expect_column_unique_value_count_to_be_between", "min_value=2", "observed 1"),
        frame_case("constant-column", lambda f: f.assign(contract="Month-to-month")),
    ),
    Case(
        "out-of-range",
        "ingest",
        ValidationFailed,
        ("column 'monthly_charges'", "expect_column_values_to_be_between", "max_value=1000", "5000"),
        frame_case("out-of-range", lambda f: _rows(f, "monthly_charges", slice(0, 3), 5000.0)),
    ),
    Case(
        "negative-tenure",
        "ingest",
        ValidationFailed,
        ("column 'tenure'", "expect_column_values_to_be_between", "min_value=0", "-1"),
        frame_case("negative-tenure", lambda f: _rows(f, "tenure", slice(0, 5), -1)),
    ),
    Case(
        "nan-in-numeric",
        "ingest",
        ValidationFailed,
        ("column 'monthly_charges'", "expect_column_values_to_not_be_null", "10 unexpected"),
        frame_case("nan-in-numeric", lambda f: _rows(f, "monthly_charges", slice(0, 10), np.nan)),
    ),
    Case(
        "inf-in-numeric",
        "ingest",
        DataError,
        ("column 'total_charges'", "2 infinite value(s)", "inf"),
        frame_case("inf-in-numeric", lambda f: _rows(f, "total_charges", slice(0, 2), np.inf)),
    ),
    Case(
        "minus-inf-without-range",
        "ingest",
        DataError,
        ("column 'tenure'", "infinite value(s)", "-inf"),
        frame_case(
            "minus-inf-without-range", lambda f: _rows(f, "tenure", slice(0, 1), -np.inf), **{"validate.ranges": {}}
        ),
    ),
    Case(
        "null-target",
        "ingest",
        ValidationFailed,
        ("column 'churn'", "expect_column_values_to_not_be_null"),
        frame_case("null-target", lambda f: _rows(f, "churn", slice(0, 3), np.nan)),
    ),
    Case(
        "too-few-rows",
        "ingest",
        ValidationFailed,
        ("table", "expect_table_row_count_to_be_between", "observed 50"),
        frame_case("too-few-rows", lambda f: f.head(50)),
    ),
    # --- target
    Case(
        "one-class-target",
        "ingest",
        ValidationFailed,
        ("column 'churn'", "expect_column_distinct_values_to_equal_set", "expected but absent: ['Yes']"),
        frame_case("one-class-target", lambda f: f.assign(churn="No")),
    ),
    Case(
        "third-label",
        "ingest",
        ValidationFailed,
        ("column 'churn'", "expect_column_distinct_values_to_equal_set", "Maybe"),
        frame_case("third-label", lambda f: _rows(f, "churn", slice(0, 20), "Maybe")),
    ),
    Case(
        "label-leakage-categorical",
        "ingest",
        ValidationFailed,
        ("column 'paperless_billing'", LEAKAGE, "single-feature ROC AUC 1.000"),
        frame_case(
            "label-leakage-categorical", lambda f: f.assign(paperless_billing=(f["churn"] == "Yes").astype(int))
        ),
    ),
    Case(
        "label-leakage-numeric",
        "ingest",
        ValidationFailed,
        ("column 'total_charges'", LEAKAGE, "single-feature ROC AUC 0.000"),
        frame_case("label-leakage-numeric", lambda f: f.assign(total_charges=(f["churn"] == "No") * 500.0)),
    ),
    # --- ids
    Case(
        "duplicate-ids",
        "ingest",
        ValidationFailed,
        ("column 'customer_id'", "expect_column_values_to_be_unique", "unexpected"),
        frame_case(
            "duplicate-ids",
            lambda f: f.assign(customer_id=np.arange(len(f)) // 2),
            **{"data.id_columns": ["customer_id"]},
        ),
    ),
    # --- files
    Case(
        "missing-file",
        "ingest",
        DataError,
        ("data source not found",),
        lambda root, sample: Bad(params_with(root, "missing-file", "data/bad/nowhere.csv"), "data/bad/nowhere.csv"),
    ),
    Case("empty-file", "ingest", DataError, ("file is empty",), bytes_case("empty-file", ".csv", lambda f: b"")),
    Case(
        "header-only",
        "ingest",
        DataError,
        ("has a header but no rows",),
        bytes_case("header-only", ".csv", lambda f: _csv_bytes(f.head(0))),
    ),
    Case(
        "truncated-gzip",
        "ingest",
        DataError,
        ("compressed file is truncated or corrupt",),
        bytes_case("truncated-gzip", ".csv.gz", _truncated_gzip),
    ),
    Case(
        "non-utf8",
        "ingest",
        DataError,
        ("not UTF-8 text at byte", "re-save it as UTF-8"),
        bytes_case("non-utf8", ".csv", _latin1),
    ),
    Case(
        "semicolon-delimited",
        "ingest",
        DataError,
        ("looks ';'-delimited", "re-save it with commas"),
        bytes_case("semicolon-delimited", ".csv", lambda f: _csv_bytes(f, sep=";")),
    ),
    Case(
        "tab-delimited",
        "ingest",
        DataError,
        ("looks '\\t'-delimited",),
        bytes_case("tab-delimited", ".csv", lambda f: _csv_bytes(f, sep="\t")),
    ),
    Case(
        "binary-garbage",
        "ingest",
        DataError,
        ("not UTF-8 text at byte",),
        bytes_case("binary-garbage", ".csv", _garbage),
    ),
    Case(
        "parquet-other-schema",
        "ingest",
        DataError,
        ("missing required column(s) ['tenure', 'monthly_charges']",),
        parquet_case(
            "parquet-other-schema", lambda f: f.rename(columns={"tenure": "months", "monthly_charges": "fee"})
        ),
    ),
    Case(
        "parquet-text-numeric",
        "ingest",
        DataError,
        ("'tenure' is declared numeric", "months"),
        parquet_case("parquet-text-numeric", lambda f: f.assign(tenure=f["tenure"].astype(str) + " months")),
    ),
    Case(
        "parquet-as-csv-name",
        "ingest",
        DataError,
        ("is a Parquet file", "data.format: parquet"),
        bytes_case("parquet-as-csv-name", ".csv", lambda f: f.to_parquet(index=False)),
    ),
    Case(
        "tampered-source", "ingest", IntegrityError, ("sha256 is", "params.yaml data.sha256 expects"), tampered_source
    ),
    # --- params.yaml
    Case(
        "params-yaml-syntax",
        "config",
        ConfigError,
        ("not valid YAML",),
        params_text_case("params-yaml-syntax", "data: [unclosed\nsplit: {test_size: 0.2\n"),
    ),
    Case(
        "params-not-a-mapping",
        "config",
        ConfigError,
        ("expected a mapping of parameter groups, got list",),
        params_text_case("params-not-a-mapping", "- data\n- split\n"),
    ),
    Case(
        "params-unknown-key",
        "config",
        ConfigError,
        ("split.tset_size: unknown key",),
        params_change_case("params-unknown-key", **{"split.tset_size": 0.3}),
    ),
    Case(
        "params-wrong-type",
        "config",
        ConfigError,
        ("split.test_size", "valid number"),
        params_change_case("params-wrong-type", **{"split.test_size": "a fifth"}),
    ),
    Case(
        "params-unknown-choice",
        "config",
        ConfigError,
        ("tune.sampler", "'annealing'"),
        params_change_case("params-unknown-choice", **{"tune.sampler": "annealing"}),
    ),
    Case(
        "params-unknown-family",
        "config",
        ConfigError,
        ("unknown model family 'xgboost'",),
        params_change_case("params-unknown-family", **{"train.families.xgboost": {}}),
    ),
    Case(
        "misspelt-column-settings",
        "columns",
        ConfigError,
        (
            "data.sensitive_features: 'femle' is not a column; did you mean 'female'?",
            "evaluate.slices: 'contrct' is not a column; did you mean 'contract'?",
            "robustness.bounds: 'tenur' is not a column; did you mean 'tenure'?",
        ),
        frame_case(
            "misspelt-column-settings",
            lambda f: f,
            **{
                "data.sensitive_features": ["femle", "senior_citizen"],
                "evaluate.slices": ["contrct"],
                "robustness.bounds": {"tenur": {"absolute": 1}},
            },
        ),
    ),
    # --- credentials, paths and bounds in the settings
    Case(
        "password-in-tracking-uri",
        "config",
        ConfigError,
        ("tracking.uri: contains a password or token", "the value is not repeated here"),
        runtime_case("password-in-tracking-uri", **{"tracking.uri": '"postgresql://optiflow:p@ss/w:rd#1@db/mlflow"'}),
        hidden=("p@ss/w:rd#1", "ss/w:rd", "rd#1"),
    ),
    Case(
        "password-in-a-query-string",
        "config",
        ConfigError,
        ("tune.storage: contains a password or token",),
        params_change_case(
            "password-in-a-query-string", **{"tune.storage": "postgresql://optiflow@db/optuna?password=p@ss/w:rd#1"}
        ),
        hidden=("p@ss/w:rd#1", "rd#1"),
    ),
    Case(
        "bad-yaml-in-an-override",
        "config",
        ConfigError,
        ("override 'split.test_size': not a valid YAML value", "line 1, column"),
        runtime_case("bad-yaml-in-an-override", **{"split.test_size": "[0.2, {"}),
    ),
    Case(
        "params-is-another-file",
        "config",
        ConfigError,
        ("not-params.yaml: not valid YAML", "at line 2, column"),
        not_a_params_file,
        hidden=("do-not-print-me", "key material", "API_TOKEN"),
    ),
    Case(
        "path-outside-the-project",
        "config",
        ConfigError,
        ("paths.candidates: must be a path inside the project folder",),
        params_change_case("path-outside-the-project", **{"paths.candidates": "../../elsewhere/models"}),
    ),
    Case(
        "absolute-path",
        "config",
        ConfigError,
        ("paths.dataset: must be a path inside the project folder",),
        params_change_case("absolute-path", **{"paths.dataset": "/etc/optiflow/dataset.parquet"}),
    ),
    Case(
        "unbounded-trials",
        "config",
        ConfigError,
        ("tune.n_trials: Input should be less than or equal to 10000",),
        params_change_case("unbounded-trials", **{"tune.n_trials": 10**9}),
    ),
    Case(
        "unbounded-workers",
        "config",
        ConfigError,
        ("score.workers: Input should be less than or equal to 256",),
        runtime_case("unbounded-workers", **{"score.workers": "100000"}),
    ),
    Case(
        "unbounded-batch",
        "config",
        ConfigError,
        ("serve.max_batch_size: Input should be less than or equal to 100000",),
        runtime_case("unbounded-batch", **{"serve.max_batch_size": "1000000000"}),
    ),
    # --- documented safe handling
    Case(
        "ignored-column",
        "ingest",
        None,
        ("a column listed in data.ignore_columns is dropped; the published dataset has the declared ones",),
        frame_case(
            "ignored-column",
            lambda f: f.assign(notes="called twice", churn_score_v2=(f["churn"] == "Yes") * 1.0),
            **{"data.ignore_columns": ["notes", "churn_score_v2"]},
        ),
    ),
    # --- scoring batches (the champion through optiflow.serving.batch.score_batch)
    Case(
        "missing-column-at-scoring",
        "score",
        DataError,
        ("missing required column(s) ['contract']",),
        _batch_case("missing-column-at-scoring", lambda f: f.drop(columns=["contract"])),
    ),
    Case(
        "renamed-column-at-scoring",
        "score",
        DataError,
        ("missing required column(s) ['tenure']",),
        _batch_case("renamed-column-at-scoring", lambda f: f.rename(columns={"tenure": "Tenure"})),
    ),
    Case(
        "repeated-column-name-at-scoring",
        "score",
        DataError,
        ("column name(s) ['contract'] appear more than once in the header",),
        bytes_case(
            "repeated-column-name-at-scoring", ".csv", lambda f: _repeated_header(f.drop(columns=["churn"]), "contract")
        ),
    ),
    Case(
        "semicolon-delimited-at-scoring",
        "score",
        DataError,
        ("looks ';'-delimited",),
        bytes_case("semicolon-delimited-at-scoring", ".csv", lambda f: _csv_bytes(f.drop(columns=["churn"]), sep=";")),
    ),
    Case(
        "missing-file-at-scoring",
        "score",
        DataError,
        ("input file not found",),
        lambda root, sample: Bad(params_with(root, "missing-file-at-scoring"), "data/bad/nowhere.csv"),
    ),
    Case(
        "truncated-gzip-at-scoring",
        "score",
        DataError,
        ("cannot be read",),
        bytes_case("truncated-gzip-at-scoring", ".csv.gz", lambda f: _truncated_gzip(f.drop(columns=["churn"]))),
    ),
    Case(
        "duplicate-columns-at-scoring",
        "score",
        DataError,
        ("column name(s) ['tenure'] appear more than once in the header",),
        _batch_case(
            "duplicate-columns-at-scoring",
            lambda f: pd.concat([f, f[["tenure"]].rename(columns={"tenure": "tenure "}) * 0], axis=1).rename(
                columns={"tenure ": "tenure"}
            ),
        ),
    ),
    # --- where scoring writes: never over the input or a file the project keeps, unless --force
    Case(
        "output-is-the-input",
        "score",
        DataError,
        ("--output would replace the input file", "--force"),
        output_case("output-is-the-input", "{source}"),
    ),
    Case(
        "rejects-file-is-the-input",
        "score",
        DataError,
        ("run.rejects.csv: the rejects file of --output run.csv would replace the input file",),
        output_case("rejects-file-is-the-input", "data/bad/run.csv", source="data/bad/run.rejects.csv"),
    ),
    Case(
        "output-onto-params-yaml",
        "score",
        DataError,
        ("params.yaml: --output would replace a project file (params.yaml)",),
        output_case("output-onto-params-yaml", "params.yaml"),
    ),
    Case(
        "output-onto-dvc-yaml",
        "score",
        DataError,
        ("dvc.yaml: --output would replace a project file (dvc.yaml)",),
        output_case("output-onto-dvc-yaml", "dvc.yaml"),
    ),
    Case(
        "output-onto-the-dataset",
        "score",
        DataError,
        ("would replace a pipeline file (paths.dataset = data/interim/dataset.parquet)",),
        output_case("output-onto-the-dataset", "data/interim/dataset.parquet"),
    ),
    Case(
        "output-onto-the-tracking-store",
        "score",
        DataError,
        ("would replace a pipeline file (tracking.uri = mlflow.db)",),
        output_case("output-onto-the-tracking-store", "mlflow.db"),
    ),
    Case(
        "output-symlink-onto-params-yaml",
        "score",
        DataError,
        ("would replace a project file (params.yaml)",),
        output_case("output-symlink-onto-params-yaml", "symlink-to-params"),
    ),
    Case(
        "output-is-a-folder",
        "score",
        DataError,
        ("is a folder; --output must name a file",),
        output_case("output-is-a-folder", "data/bad"),
    ),
    Case(
        "unseen-category-at-scoring",
        "score",
        None,
        ("a row with a category outside validate.domains goes to the rejects file naming column and value",),
        _batch_case("unseen-category-at-scoring", lambda f: _rows(f, "contract", slice(0, 50), "Quarterly")),
        scored=lambda sample: Scored(sample, dict.fromkeys(range(50), UNSEEN_REASON)),
    ),
    Case(
        "numbers-with-commas-at-scoring",
        "score",
        None,
        ("a value with a thousands separator is not a number: that row is rejected, the others are scored",),
        _batch_case("numbers-with-commas-at-scoring", _thousands),
        scored=lambda sample: Scored(
            sample,
            {
                row: f"total_charges: not a number ('{value:,}')"
                for row, value in sample["total_charges"].items()
                if value >= 1000
            },
        ),
    ),
    Case(
        "nan-inf-at-scoring",
        "score",
        None,
        ("NaN where no fill is declared and +-inf (never finite) are rejected; a declared fill is scored",),
        _batch_case("nan-inf-at-scoring", _nan_inf),
        scored=_nan_inf_scored,
    ),
    Case(
        "batch-10x-larger-at-scoring",
        "score",
        None,
        ("scored completely in chunks, row for row as one in-memory predict_proba",),
        _batch_case(
            "batch-10x-larger-at-scoring",
            lambda f: pd.concat([f] * 10, ignore_index=True),
            **{"score.chunk_rows": BIG_BATCH_CHUNK_ROWS, "score.reasons": 0},
        ),
        scored=lambda sample: Scored(
            pd.concat([sample] * 10, ignore_index=True), {}, chunks=-(-10 * len(sample) // BIG_BATCH_CHUNK_ROWS)
        ),
    ),
)
