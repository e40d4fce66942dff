"""Reading the settings into a validated, frozen Config, every problem named by its key (and where it was set).

Sources, in increasing precedence: the schema defaults; params.yaml (what changes results: DVC tracks it);
runtime.yaml next to params.yaml and OPTIFLOW_<GROUP>__<KEY> environment variables (the runtime groups only:
tracking, serve, score, orchestration, which never change results, so changing them invalidates no stage); and
`-S KEY=VALUE` overrides for one run (any key). MLFLOW_TRACKING_URI, when set, still wins for the tracking store.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from optiflow.config.redaction import redact_uri
from optiflow.config.schema import CREDENTIALS_ERROR, RUNTIME_GROUPS, Params
from optiflow.errors import ConfigError, closest

RUNTIME_FILE = "runtime.yaml"  # next to params.yaml; optional; runtime groups only
ENV_PREFIX = "OPTIFLOW_"  # OPTIFLOW_<GROUP>__<KEY>, e.g. OPTIFLOW_SERVE__PORT=9000 (values read as YAML scalars)
ENV_SEPARATOR = "__"
DEFAULT = "default"
OVERRIDE = "-S"

# Top-level groups spelled by field name (`validation`, `registry`) are reported under their YAML key.
_ALIASES = {name: field.alias for name, field in Params.model_fields.items() if field.alias}

KeyPath = tuple[str, ...]


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


@dataclass(frozen=True)
class Layer:
    """One source of settings: its raw values and, per key path it sets, where that came from (e.g. the name of
    the environment variable)."""

    values: dict[str, Any]
    origins: dict[KeyPath, str]


@dataclass(frozen=True)
class Setting:
    """One effective value and where it came from: default, params.yaml, runtime.yaml, env NAME or -S."""

    key: KeyPath
    value: Any
    origin: str

    @property
    def dotted(self) -> str:
        return ".".join(self.key)


@dataclass(frozen=True)
class Resolved:
    """The Config and, for every leaf of its settings, where the value came from."""

    config: Config
    params_file: Path
    runtime_file: Path | None  # None when there is no runtime.yaml
    settings: tuple[Setting, ...]


QUOTE_LIMIT = 120  # characters of an offending value an error repeats


def quoted(value: Any) -> str:
    """An offending value as an error repeats it: redacted, and cut short (an error quotes the value, not a file)."""
    text = redact_uri(repr(value))
    return text if len(text) <= QUOTE_LIMIT else f"{text[:QUOTE_LIMIT]}... ({len(text)} characters)"


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Set dotted keys (``split.test_size``), as ``dvc exp run -S`` does; strings are read as YAML scalars."""
    result = copy.deepcopy(dict(raw))
    for dotted, value in overrides.items():
        if isinstance(value, str):
            value = _yaml_value(value, f"override {dotted!r}")
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


def parse_params(
    raw: Mapping[str, Any], origin: str = "params.yaml", sources: tuple[Layer, ...] = (), main: str = ""
) -> Params:
    """Validate ``raw`` against the schema; one ConfigError lists every problem by key, with the source that set it
    when that is not ``main`` (the params file), and the headline names only the sources that hold a problem."""
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        problems, blamed = [], set()
        for error in exc.errors():
            loc = tuple(str(part) for part in error["loc"])
            where = ".".join(loc) or "(top level)"
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown key" + _did_you_mean(loc) + " (see docs/configuration.md)"
            elif error["type"] != CREDENTIALS_ERROR and not isinstance(error.get("input"), dict | list):
                message += f" (got {quoted(error.get('input'))})"
            source = _origin(_normalise_path(loc), sources) or main
            blamed.add(source)
            if source != main:
                message += f" [set by {source}]"
            problems.append(f"  {where}: {message}")
        headline = f"{origin} is invalid" if main in blamed or not main else f"{_sources(blamed)} invalid"
        raise ConfigError(f"{headline}:\n" + "\n".join(problems)) from None


def _sources(blamed: set[str]) -> str:
    """``-S override is`` / ``runtime.yaml and -S override are``: where the problems were set, for the headline."""
    names = [f"{name} override" if name == OVERRIDE else name for name in sorted(blamed)]
    return " and ".join(names) + (" is" if len(names) == 1 else " are")


def _did_you_mean(loc: KeyPath) -> str:
    """``; did you mean 'test_size'?`` when a known key at that place is spelt closely, else empty."""
    match = closest(loc[-1], known_keys(loc[:-1])) if loc else None
    return f"; did you mean {match!r}?" if match else ""


def known_keys(parent: KeyPath) -> list[str]:
    """The keys the schema allows under ``parent`` (a group, a nested group, or an entry of a mapping of groups)."""
    import typing

    model: Any = Params
    entry = False  # the next part is a key of a mapping (a column name), not a field
    for part in parent:
        if entry:
            entry = False
            continue
        field = _fields(model).get(part)
        if field is None:
            return []
        model = _model_in(field.annotation)
        entry = typing.get_origin(field.annotation) is dict or any(
            typing.get_origin(argument) is dict for argument in typing.get_args(field.annotation)
        )
    return [] if entry else list(_fields(model))


def _fields(model: Any) -> dict[str, Any]:
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return {}
    return {field.alias or name: field for name, field in model.model_fields.items()}


def _model_in(annotation: Any) -> Any:
    """The pydantic model an annotation holds (directly, optionally, or as the values of a mapping or tuple)."""
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


def load_config(
    params_path: str | Path = "params.yaml",
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read and validate the settings; the project root is the folder that holds params.yaml."""
    return resolve_settings(params_path, overrides, environ).config


def resolve_settings(
    params_path: str | Path = "params.yaml",
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Resolved:
    """The Config of params.yaml + runtime.yaml + OPTIFLOW_* environment (``environ``, default os.environ) +
    overrides, and where every effective value came from."""
    path = Path(params_path).resolve()
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    params_raw = _read_mapping(path)
    misplaced = [group for group in RUNTIME_GROUPS if group in params_raw]
    if misplaced:
        one = len(misplaced) == 1
        raise ConfigError(
            f"{path}: {', '.join(f'`{group}:`' for group in misplaced)} "
            f"{'is a runtime group' if one else 'are runtime groups'} and {'does' if one else 'do'} not belong in "
            "params.yaml (runtime settings never change results, so they must not invalidate a stage): move "
            f"{'it' if one else 'them'} to {RUNTIME_FILE} next to params.yaml, set "
            f"{runtime_env_name(misplaced[0] if one else '<GROUP>', '<KEY>')} environment variables, or pass "
            f"-S {misplaced[0] if one else '<group>'}.<key>=<value> for one run"
        )
    runtime_path = path.parent / RUNTIME_FILE
    runtime_raw = _read_runtime_file(runtime_path) if runtime_path.is_file() else {}
    env_values, env_origins = _runtime_from_env(os.environ if environ is None else environ)
    override_values = apply_overrides({}, overrides or {})

    main = path.name
    layers = (
        _layer(params_raw, main),
        _layer(runtime_raw, RUNTIME_FILE),
        Layer(_normalise(env_values), env_origins),
        _layer(override_values, OVERRIDE),
    )
    merged = apply_overrides(_merge(_merge(params_raw, runtime_raw), env_values), overrides or {})
    params = parse_params(merged, origin=str(path), sources=layers, main=main)
    settings = tuple(
        Setting(key, value, _origin(key, layers) or DEFAULT)
        for key, value in _leaves(params.model_dump(mode="json", by_alias=True))
    )
    return Resolved(
        config=Config(root=path.parent, params=params),
        params_file=path,
        runtime_file=runtime_path if runtime_path.is_file() else None,
        settings=settings,
    )


def runtime_env_name(group: str, key: str) -> str:
    """The environment variable that sets ``group.key``, e.g. OPTIFLOW_SERVE__PORT."""
    return f"{ENV_PREFIX}{group.upper()}{ENV_SEPARATOR}{key.upper()}"


def _read_mapping(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); is this a params file?") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {yaml_problem(exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of parameter groups, got {type(raw).__name__}")
    return raw


def _read_runtime_file(path: Path) -> dict[str, Any]:
    """runtime.yaml: the runtime groups only, with params.yaml's group/key structure; an empty file is fine."""
    if not path.read_text(encoding="utf-8").strip():
        return {}
    raw = _read_mapping(path)
    for group, values in raw.items():
        if group not in RUNTIME_GROUPS:
            raise ConfigError(
                f"{path}: `{group}:` is not a runtime group (runtime groups: {', '.join(RUNTIME_GROUPS)}); settings "
                "that can change results belong in params.yaml, where DVC tracks them"
            )
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: `{group}:` must be a mapping of keys, got {type(values).__name__}")
    return raw


def _runtime_from_env(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[KeyPath, str]]:
    """OPTIFLOW_<GROUP>__<KEY> variables as nested values, and the variable behind each key path. Other OPTIFLOW_*
    names (no double underscore, e.g. OPTIFLOW_STACK_DIR) are not settings and are left alone."""
    values: dict[str, Any] = {}
    origins: dict[KeyPath, str] = {}
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or ENV_SEPARATOR not in name:
            continue
        parts = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split(ENV_SEPARATOR))
        if not all(parts):
            raise ConfigError(f"environment variable {name}: expected {ENV_PREFIX}<GROUP>{ENV_SEPARATOR}<KEY>")
        if parts[0] not in RUNTIME_GROUPS:
            raise ConfigError(
                f"environment variable {name}: `{parts[0]}` is not a runtime group (runtime groups: "
                f"{', '.join(RUNTIME_GROUPS)}); settings that can change results belong in params.yaml, or -S for "
                "one run"
            )
        node = values
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _yaml_value(environ[name], f"environment variable {name}")
        for key, _ in _paths({parts[-1]: node[parts[-1]]}):
            origins[parts[:-1] + key] = f"env {name}"
    return values, origins


def _yaml_value(text: str, what: str) -> Any:
    if not text.strip():
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what}: not a valid YAML value: {yaml_problem(exc)}") from None


def yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong and where (line, column), without the quoted source lines PyYAML adds: the file may not be a
    params file at all, and its lines must not end up in an error."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or type(exc).__name__
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def _layer(values: dict[str, Any], label: str) -> Layer:
    normalised = _normalise(values)
    return Layer(normalised, {key: label for key, _ in _paths(normalised)})


def _normalise(values: Mapping[str, Any]) -> dict[str, Any]:
    return {_ALIASES.get(key, key): value for key, value in values.items()}


def _normalise_path(key: KeyPath) -> KeyPath:
    return (_ALIASES.get(key[0], key[0]), *key[1:]) if key else key


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` laid over it: mappings merge key by key, anything else is replaced."""
    result = copy.deepcopy(dict(base))
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def _paths(values: Mapping[str, Any], prefix: KeyPath = ()) -> Iterator[tuple[KeyPath, Any]]:
    """Every key path of a nested mapping, groups included."""
    for key, value in values.items():
        path = (*prefix, str(key))
        yield path, value
        if isinstance(value, dict):
            yield from _paths(value, path)


def _leaves(values: Mapping[str, Any], prefix: KeyPath = ()) -> Iterator[tuple[KeyPath, Any]]:
    """Leaves of a nested mapping: scalars, lists and empty mappings."""
    for key, value in values.items():
        path = (*prefix, str(key))
        if isinstance(value, dict) and value:
            yield from _leaves(value, path)
        else:
            yield path, value


def _origin(key: KeyPath, layers: tuple[Layer, ...]) -> str | None:
    """The highest-precedence layer that set exactly this key path, or None (the schema default)."""
    for layer in reversed(layers):
        if key in layer.origins:
            return layer.origins[key]
    return None
