"""Everything about the settings that can be checked before any work starts, in one call every entry point makes:
the schema (optiflow.config), the model families and their hyperparameters against the real estimators, and every
setting that names a column against the data's header (read without its rows; no Prefect, GX or torch on this path).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from optiflow.config import Config, Params, load_config
from optiflow.data.ingest import check_header, read_header
from optiflow.data.keys import BOOKKEEPING_COLUMNS
from optiflow.errors import ConfigError, closest


def load_settings(params_path: str | Path = "params.yaml", overrides: Mapping[str, Any] | None = None) -> Config:
    """The validated Config, or one ConfigError naming every problem; nothing has been read or started yet."""
    config = load_config(params_path, overrides)
    _check_families(config)
    return config


def load_settings_for_data(
    params_path: str | Path = "params.yaml", overrides: Mapping[str, Any] | None = None
) -> Config:
    """``load_settings`` with every column-naming setting checked against data.source's header: what a training
    run (or anything that reads the training table) calls before it starts. The columns come first: that check
    needs no model library, so a misspelt column is reported in about a second."""
    config = load_config(params_path, overrides)
    check_columns(config)
    _check_families(config)
    return config


def _check_families(config: Config) -> None:
    from optiflow.modeling.families import check_settings  # scikit-learn: a second to import

    check_settings(config.params)


def named_columns(params: Params) -> Iterator[tuple[str, str]]:
    """(setting, column) for every column a setting names."""
    data, validate = params.data, params.validation
    yield "data.target", data.target
    groups: dict[str, Sequence[str]] = {
        "data.id_columns": data.id_columns,
        "data.sensitive_features": data.sensitive_features,
        "data.feature_types.numeric": data.feature_types.numeric if data.feature_types else (),
        "data.feature_types.categorical": data.feature_types.categorical if data.feature_types else (),
        "data.fill_missing": list(data.fill_missing),
        "data.ignore_columns": data.ignore_columns,
        "data.groups.bins": list(data.groups.bins),
        "validate.null_fraction": list(validate.null_fraction),
        "validate.ranges": list(validate.ranges),
        "validate.domains": list(validate.domains),
        "validate.allow_leakage": validate.allow_leakage,
        "evaluate.slices": params.evaluate.slices,
        "robustness.bounds": list(params.robustness.bounds),
        "monitor.drift_tests": list(params.monitor.drift_tests),
    }
    for scenario in params.simulate.scenarios or ():
        groups[f"simulate.scenarios[{scenario.name}]"] = scenario.columns()
    for setting, columns in groups.items():
        for column in columns:
            yield setting, column


def column_problems(params: Params, header: Sequence[str]) -> list[str]:
    """Every column-naming setting that names a column the header lacks (with the closest spelling), a bound on a
    column declared categorical, and a column the header has but no setting names (a training table takes only
    columns it was told about; the row_key and row_role bookkeeping columns excepted)."""
    present = list(header)
    problems = []
    for setting, column in named_columns(params):
        if column not in present:
            problems.append(f"{setting}: {column!r} is not a column{_suggestion(column, present)}")
    data = params.data
    if data.feature_types is not None:
        categorical = set(data.feature_types.categorical)
        for column in params.robustness.bounds:
            if column in categorical:
                problems.append(
                    f"robustness.bounds: {column!r} is declared categorical; bounds move numeric columns only"
                )
        named = {column for _, column in named_columns(params)}
        # a row's key and role (a retraining set, a simulated batch) are bookkeeping, never features
        undeclared = [column for column in present if column not in named and column not in BOOKKEEPING_COLUMNS]
        if undeclared:
            problems.append(
                f"columns {undeclared} are in the data but no setting names them: add them to "
                "data.feature_types to train on them, or to data.ignore_columns to leave them out"
            )
    return problems


def check_columns(config: Config, source: Path | None = None) -> None:
    """One ConfigError listing every problem of ``column_problems`` against the header of ``source`` (default
    data.source); an unreadable or malformed header is the DataError ingest would raise."""
    path = source or config.source
    header = read_header(path, config.params.data.format)
    check_header(header, path)
    problems = column_problems(config.params, header)
    if problems:
        shown = ", ".join(header[:30]) + (f", ... ({len(header)} in all)" if len(header) > 30 else "")
        raise ConfigError(
            f"settings name columns that {path.name} does not have (its columns: {shown}):\n"
            + "\n".join(f"  {problem}" for problem in problems)
        )


def _suggestion(name: str, present: Sequence[str]) -> str:
    match = closest(name, present)
    return f"; did you mean {match!r}?" if match else ""
