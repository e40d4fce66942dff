"""What the CLI shows about the settings: the JSON Schema, docs/configuration.md (both generated from the schema's
field docstrings) and the effective settings with where each value came from (`optiflow config show|schema|docs`).

Not imported by optiflow.config itself, so editing how settings are described re-runs no stage.
"""

from __future__ import annotations

import json
import os
import re
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, to_jsonable_python

from optiflow.config.loading import RUNTIME_FILE, Resolved, Setting, redact_uri, runtime_env_name
from optiflow.config.schema import RUNTIME_GROUPS, Params

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
DOCS_PATH = "docs/configuration.md"
_INLINE_DEFAULT = 60  # longer defaults are written as a YAML block under the group's table
_COLLAPSE = 72  # `config show` writes a nested mapping on one line when it fits (unindented) and has one source
_ORIGIN_COLUMN = 64  # where `config show` aligns the origins (longer lines push theirs right)


# --- JSON Schema -------------------------------------------------------------------------------------------------


def json_schema() -> dict[str, Any]:
    """The JSON Schema of params.yaml + runtime.yaml (YAML keys, every field with its description and default)."""
    return {"$schema": SCHEMA_DIALECT, **Params.model_json_schema(by_alias=True)}


def render_json_schema() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"


# --- docs/configuration.md ---------------------------------------------------------------------------------------


def render_docs() -> str:
    """docs/configuration.md: where values come from, then one section per group with a table of every key."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated from optiflow/config/schema.py by `optiflow docs`; edit the field docstrings there,",
        "     not this file (a test fails when this file is not current). -->",
        "",
        "Every setting is defined once, with its default and a description, in `optiflow/config/schema.py`.",
        "Each value is taken from the first of these that sets it, from highest precedence to lowest:",
        "",
        "1. `-S group.key=value` on the command line (`optiflow train -S split.test_size=0.25`): any key, for one run;",
        f"2. an environment variable `{runtime_env_name('<GROUP>', '<KEY>')}` (`{runtime_env_name('serve', 'port')}"
        "=9000`), read as a YAML scalar: runtime groups only;",
        f"3. `{RUNTIME_FILE}` next to params.yaml (optional, the same group/key structure): runtime groups only;",
        "4. `params.yaml`: the settings that change results. DVC tracks, per stage, the groups it reads (dvc.yaml",
        "   `params:`), so each of those groups must stay in params.yaml, even when it only restates defaults;",
        "5. the default in the tables below.",
        "",
        "`MLFLOW_TRACKING_URI`, when set, wins over `tracking.uri` (credentials belong there, never in a file).",
        "`optiflow config show` prints every effective value and where it came from, `optiflow config schema` writes",
        "the JSON Schema, and `optiflow docs` regenerates this file.",
        "",
        "## Runtime groups",
        "",
        f"{_and(RUNTIME_GROUPS)} say how and where a run executes (tracking store, API, batch scoring, task",
        "runner), never what it computes. They are not DVC params and not part of any stage's cache key, so changing",
        f"them invalidates nothing. They are read from `{RUNTIME_FILE}` and the environment only: a runtime group in",
        f"params.yaml is an error. For example, `{RUNTIME_FILE}`:",
        "",
        "```yaml",
        "tracking:",
        "  uri: http://127.0.0.1:5000",
        "serve:",
        "  port: 9000",
        "orchestration:",
        "  task_runner: dask",
        "```",
        "",
        "`paths` is not a runtime group: dvc.yaml is rendered with the effective paths (`optiflow dvc-yaml`), so set",
        "a path in params.yaml and re-render dvc.yaml.",
        "",
        "## Groups",
        "",
        "| Group | Where | What |",
        "|---|---|---|",
    ]
    for name, field in Params.model_fields.items():
        key = field.alias or name
        where = "runtime.yaml / environment" if key in RUNTIME_GROUPS else "params.yaml"
        if field.is_required():
            where += " (required)"
        lines.append(f"| [`{key}`](#{key}) | {where} | {_cell(field.description)} |")
    for name, field in Params.model_fields.items():
        lines += ["", *_group_section(field.alias or name, field)]
    return "\n".join(lines) + "\n"


def _group_section(key: str, field: FieldInfo) -> list[str]:
    lines = [f"## {key}", ""]
    model = _model_of(field.annotation)
    if model is None:  # a top-level scalar (seed)
        rows, blocks, items = [_row(key, field)], [], []
    else:
        lines += [_paragraph(model.__doc__), ""]
        if key in RUNTIME_GROUPS:
            env = runtime_env_name(key, "<KEY>")
            lines += [f"Runtime group: set it in `{RUNTIME_FILE}` or with `{env}`, never in params.yaml.", ""]
        rows, blocks, items = _rows(model, ())
    lines += ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    lines += [f"| `{'.'.join(path)}` | {kind} | {default} | {text} |" for path, kind, default, text in rows]
    for path, value in blocks:
        lines += ["", f"Default of `{key}.{'.'.join(path)}`:", "", "```yaml", _block(value), "```"]
    for path, item in items:
        lines += ["", f"Each entry of `{key}.{'.'.join(path)}` ({item.__name__}): {_paragraph(item.__doc__)}", ""]
        lines += ["| Key | Type | Default | Description |", "|---|---|---|---|"]
        item_rows, _, _ = _rows(item, ())
        lines += [f"| `{'.'.join(p)}` | {kind} | {default} | {text} |" for p, kind, default, text in item_rows]
    return lines


Row = tuple[tuple[str, ...], str, str, str]


def _rows(
    model: type[BaseModel], prefix: tuple[str, ...]
) -> tuple[list[Row], list[tuple[tuple[str, ...], Any]], list[tuple[tuple[str, ...], type[BaseModel]]]]:
    """Table rows of a model's fields (nested models flattened as dotted keys), defaults too long for a cell, and
    the models that a field maps names to (described after the table)."""
    rows: list[Row] = []
    blocks: list[tuple[tuple[str, ...], Any]] = []
    items: list[tuple[tuple[str, ...], type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        path = (*prefix, field.alias or name)
        nested = _model_of(field.annotation)
        if nested is not None and field.annotation is nested:
            sub_rows, sub_blocks, sub_items = _rows(nested, path)  # a sub-group: its keys, dotted
            rows, blocks, items = rows + sub_rows, blocks + sub_blocks, items + sub_items
            continue
        kind, default, text = _describe(field)
        if len(default) > _INLINE_DEFAULT:
            blocks.append((path, _default(field)))
            default = "see below"
        rows.append((path, kind, default, text))
        if nested is not None:  # an optional sub-group (data.feature_types)
            sub_rows, _, _ = _rows(nested, path)
            rows += sub_rows
        item = _item_model(field.annotation)
        if item is not None:
            items.append((path, item))
    return rows, blocks, items


def _row(key: str, field: FieldInfo) -> Row:
    kind, default, text = _describe(field)
    return (key,), kind, default, text


def _describe(field: FieldInfo) -> tuple[str, str, str]:
    constraints = _constraints(field)
    kind = _cell(_type_name(field.annotation) + (f", {constraints}" if constraints else ""))
    default = "required" if field.is_required() else f"`{_cell(_flow(_default(field)))}`"
    return kind, default, _cell(field.description)


def _default(field: FieldInfo) -> Any:
    value = field.get_default(call_default_factory=True)
    return None if value is PydanticUndefined else to_jsonable_python(value)


def _constraints(field: FieldInfo) -> str:
    words = []
    for item in field.metadata:
        for attribute, symbol in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if isinstance(item, getattr(annotated_types, attribute.capitalize())):
                words.append(f"{symbol} {getattr(item, attribute)}")
        if isinstance(item, annotated_types.MinLen) and item.min_length == 1:
            words.append("non-empty")
    return ", ".join(words)


def _type_name(annotation: Any, inner: bool = False) -> str:
    """A readable type: ``int``, ``auto | csv | parquet``, ``list of str``, ``map of str to float``; a union inside a
    list or map is parenthesised (``inner``)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    if origin is Literal:
        names = [str(arg) for arg in args]
    elif origin in (Union, types.UnionType):
        names = list(dict.fromkeys(_type_name(arg) for arg in args))
    elif origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return f"list of {_type_name(args[0], inner=True)}"
    elif origin is tuple:
        return "[" + ", ".join(_type_name(arg) for arg in args) + "]"
    elif origin is dict:
        return f"map of {_type_name(args[0], inner=True)} to {_type_name(args[1], inner=True)}"
    else:
        return getattr(annotation, "__name__", str(annotation))
    text = " | ".join(names)
    return f"({text})" if inner and len(names) > 1 else text


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The settings model behind ``annotation`` (a model, or a model or null), else None."""
    candidates = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    models = [arg for arg in candidates if isinstance(arg, type) and issubclass(arg, BaseModel)]
    return models[0] if models else None


def _item_model(annotation: Any) -> type[BaseModel] | None:
    """The model a mapping field holds as values, however deep (robustness.bounds, tune.spaces), else None."""
    while get_origin(annotation) is dict:
        annotation = get_args(annotation)[1]
        model = _model_of(annotation)
        if model is not None:
            return model
    return None


def _flow(value: Any) -> str:
    """A value as one line of YAML."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9, sort_keys=False, allow_unicode=True).strip()
    return text.removesuffix("\n...").strip()


def _block(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=None, width=100, sort_keys=False).rstrip("\n")


def _paragraph(text: str | None) -> str:
    return re.sub(r"\s+", " ", text or "").strip()


def _cell(text: str | None) -> str:
    return _paragraph(text).replace("|", "\\|")


def _and(names: tuple[str, ...]) -> str:
    quoted = [f"`{name}`" for name in names]
    return ", ".join(quoted[:-1]) + " and " + quoted[-1]


# --- optiflow config show ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One line of `config show`: indented YAML text and where its value came from (None for a group header)."""

    text: str
    origin: str | None


def settings_lines(resolved: Resolved, environ: Mapping[str, str] | None = None) -> list[Line]:
    """The effective settings as YAML-ish lines, each value with its origin; a nested mapping whose values share
    one origin is written on one line when it fits (a search range, a bound). MLFLOW_TRACKING_URI in ``environ``
    (default os.environ) is noted at tracking.uri, which it overrides."""
    from_env = (os.environ if environ is None else environ).get("MLFLOW_TRACKING_URI")
    tree: dict[str, Any] = {}
    for setting in resolved.settings:
        if from_env and setting.key == ("tracking", "uri"):
            setting = replace(setting, origin=f"{setting.origin}; MLFLOW_TRACKING_URI={redact_uri(from_env)} wins")
        node = tree
        for part in setting.key[:-1]:
            node = node.setdefault(part, {})
        node[setting.key[-1]] = setting
    lines = [
        Line(f"# effective settings of {resolved.params_file}", None),
        Line(f"# runtime file: {resolved.runtime_file or f'none ({RUNTIME_FILE} next to params.yaml)'}", None),
    ]
    lines += list(_tree_lines(tree, 0))
    return lines


def aligned(lines: list[Line]) -> list[tuple[str, str | None]]:
    """Each line's text padded so that the origins line up, with its origin (None for headers and comments)."""
    column = min(max((len(line.text) for line in lines if line.origin is not None), default=0), _ORIGIN_COLUMN)
    return [(line.text if line.origin is None else line.text.ljust(column), line.origin) for line in lines]


def format_settings(resolved: Resolved, environ: Mapping[str, str] | None = None) -> str:
    """`config show` as plain text: each value followed by `# origin`, aligned."""
    return "\n".join(
        text if origin is None else f"{text}  # {origin}" for text, origin in aligned(settings_lines(resolved, environ))
    )


def _tree_lines(tree: dict[str, Any], depth: int) -> Iterator[Line]:
    indent = "  " * depth
    for key, node in tree.items():
        if isinstance(node, Setting):
            yield Line(f"{indent}{key}: {_flow(node.value)}", node.origin)
            continue
        settings = list(_settings(node))
        origins = {setting.origin for setting in settings}
        if depth >= 1 and len(origins) == 1:
            text = f"{key}: {_flow(_values(node))}"
            if len(text) <= _COLLAPSE:
                text = indent + text
                yield Line(text, origins.pop())
                continue
        yield Line(f"{indent}{key}:", None)
        yield from _tree_lines(node, depth + 1)


def _settings(tree: dict[str, Any]) -> Iterator[Setting]:
    for node in tree.values():
        if isinstance(node, Setting):
            yield node
        else:
            yield from _settings(node)


def _values(tree: dict[str, Any]) -> dict[str, Any]:
    return {key: node.value if isinstance(node, Setting) else _values(node) for key, node in tree.items()}
