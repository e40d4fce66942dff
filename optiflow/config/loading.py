"""Reading params.yaml into a validated, frozen Config: overrides applied first, every problem named by its key."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from optiflow.config.schema import Params
from optiflow.errors import ConfigError


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
