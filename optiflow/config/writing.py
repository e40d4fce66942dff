"""Writing settings into params.yaml for `optiflow init`: the data-specific groups replaced, everything else (and
its comments) kept, and a hand-edited file never overwritten without being asked.

The first line of a file init wrote records the sha256 of what follows it; a file without that line, or whose
content no longer matches it, was edited by a person, and init refuses to overwrite it without --force (showing
the diff). Uses ruamel.yaml's round trip so the comments of a hand-written params.yaml survive.
"""

from __future__ import annotations

import difflib
import hashlib
import io
from collections.abc import Mapping
from typing import Any

from optiflow.config.schema import Params
from optiflow.errors import ConfigError

STAMP = "# Written by `optiflow init`"
# Groups init writes as a whole (the old table's columns mean nothing for the new one); the others key by key.
WHOLE_GROUPS = ("data", "validate")
# A new params.yaml holds every group a stage reads (DVC tracks them per stage), in this order.
GROUP_ORDER = (
    "seed", "data", "validate", "split", "tune", "train", "compress", "evaluate", "fairness", "explain",
    "robustness", "gates", "register", "monitor", "simulate",
)  # fmt: skip


# What a new params.yaml holds besides the data-specific groups: the keys a user most often changes, with the schema's
# defaults (every group a stage reads must be there for DVC).
NEW_FILE_KEYS: dict[str, tuple[str, ...]] = {
    "split": ("test_size", "valid_size"),
    "tune": ("sampler", "n_trials", "cv_folds"),
    "train": ("families",),
    "compress": ("family",),
    "evaluate": ("primary_metric", "threshold_policy"),
    "fairness": ("max_equalized_odds_difference", "min_group_size", "mitigate"),
    "explain": ("max_rows",),
    "robustness": ("bounds",),
    "gates": ("min_quality", "max_flip_rate", "max_auc_drop", "allow_not_evaluated"),
}


def new_file_groups() -> dict[str, Any]:
    """The groups of a new params.yaml, from the schema defaults (seed included)."""
    defaults = Params.model_construct().model_dump(mode="json", by_alias=True)
    return {"seed": defaults["seed"]} | {
        group: {key: _schema_default(group, key) for key in keys} for group, keys in NEW_FILE_KEYS.items()
    }


def _schema_default(group: str, key: str) -> Any:
    field = next(field for name, field in Params.model_fields.items() if (field.alias or name) == group)
    model = field.default_factory()  # type: ignore[misc]
    return model.model_dump(mode="json")[key]


def render(
    current: str | None,
    updates: Mapping[str, Mapping[str, Any]],
    new_file: Mapping[str, Mapping[str, Any] | Any],
    comments: Mapping[tuple[str, str], str],
    origin: str,
) -> str:
    """``current`` (None: a new file made from ``new_file``) with ``updates`` written in; ``comments`` go at the end
    of the (group, key) lines; the stamp line names ``origin`` and the sha256 of the rest."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

    yaml = YAML()
    yaml.width = 120
    yaml.indent(mapping=2, sequence=4, offset=2)
    if current is not None:
        document = yaml.load(_without_stamp(current)) or CommentedMap()
    else:
        document = CommentedMap()
        for group in GROUP_ORDER:
            if group in new_file or group in updates:
                document[group] = _node(new_file.get(group, {}), top=True)
    for group, values in updates.items():
        if group in WHOLE_GROUPS or not isinstance(document.get(group), Mapping):
            if group in document:
                document[group] = _node(dict(values), top=True)
            else:
                document.insert(_position(document, group), group, _node(dict(values), top=True))
            continue
        for key, value in values.items():
            document[group][key] = _node(value)
    for (group, key), text in comments.items():
        if isinstance(document.get(group), Mapping) and key in document[group]:
            document[group].yaml_add_eol_comment(text, key)  # replaces the key's earlier one: never piles up
    buffer = io.StringIO()
    yaml.dump(document, buffer)
    body = buffer.getvalue()
    return f"{STAMP} from {origin} (sha256 of what follows: {_digest(body)}); edit it freely\n{body}"


def hand_edited(text: str) -> bool:
    """Whether a person wrote or changed ``text`` since init wrote it (no stamp, or a stamp that no longer fits)."""
    first, _, body = text.partition("\n")
    if not first.startswith(STAMP) or "sha256 of what follows: " not in first:
        return True
    recorded = first.split("sha256 of what follows: ", 1)[1].split(")", 1)[0]
    return recorded != _digest(body)


def refuse_overwrite(path: str, current: str, proposed: str) -> ConfigError:
    """The error for a hand-edited file: what init would change, as a unified diff, and how to go ahead."""
    diff = "".join(
        difflib.unified_diff(
            _without_stamp(current).splitlines(keepends=True),
            _without_stamp(proposed).splitlines(keepends=True),
            fromfile=f"{path} (now)",
            tofile=f"{path} (optiflow init)",
        )
    )
    return ConfigError(
        f"{path} was edited by hand; `optiflow init` would change it as below. Run it again with --force to "
        f"write it, or with --params NEW.yaml to write another file.\n{diff.rstrip()}"
    )


def _without_stamp(text: str) -> str:
    return text.partition("\n")[2] if text.startswith(STAMP) else text


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8")).hexdigest()[:16]


def _position(document: Mapping[str, Any], group: str) -> int:
    """Where a missing group goes: after the last group that comes before it in GROUP_ORDER."""
    order = {name: index for index, name in enumerate(GROUP_ORDER)}
    keys = list(document)
    earlier = [i for i, key in enumerate(keys) if order.get(key, len(order)) < order.get(group, len(order))]
    return earlier[-1] + 1 if earlier else 0


def _node(value: Any, top: bool = False) -> Any:
    """ruamel nodes for ``value``: short lists and mappings of scalars on one line (flow style), the rest nested
    (a group, ``top``, always is)."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(value, Mapping):
        node = CommentedMap((key, _node(item)) for key, item in value.items())
        flat = all(_scalar(item) or _flat_list(item) for item in value.values())
        if value and flat and len(value) <= 6 and not top:
            node.fa.set_flow_style()
        return node
    if isinstance(value, list | tuple):
        node = CommentedSeq(_node(item) for item in value)
        if all(_scalar(item) for item in value):
            node.fa.set_flow_style()
        return node
    return value


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _flat_list(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(_scalar(item) for item in value)
