"""Everything about the settings that can be checked before any work starts, in one call every entry point makes:
the schema (optiflow.config), then the model families and their hyperparameters against the real estimators."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from optiflow.config import Config, load_config
from optiflow.modeling.families import check_settings


def load_settings(params_path: str | Path = "params.yaml", overrides: Mapping[str, Any] | None = None) -> Config:
    """The validated Config, or one ConfigError naming every problem; nothing has been read or started yet."""
    config = load_config(params_path, overrides)
    check_settings(config.params)
    return config
