"""No pickle on a load path Optiflow controls: a scan of the code for unsafe deserialisers, plus refusal of
tampered and untrusted model files."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("optiflow", "tasks", "flows", "bench")

# Calls that can execute code from the bytes they read (by dotted name as written, with common aliases).
UNSAFE_CALLS = {
    "pickle.load",
    "pickle.loads",
    "pickle.Unpickler",
    "cloudpickle.load",
    "cloudpickle.loads",
    "dill.load",
    "dill.loads",
    "joblib.load",
    "pd.read_pickle",
    "pandas.read_pickle",
    "shelve.open",
    "yaml.unsafe_load",
    "yaml.full_load",
    "mlflow.sklearn.load_model",
    "mlflow.pyfunc.load_model",
    "mlflow.pytorch.load_model",
}
UNSAFE_IMPORTS = {"pickle", "cloudpickle", "dill", "joblib", "shelve"}

# (file, call) -> why it is acceptable. Keep this empty unless the reason holds up in review.
ALLOWED: dict[tuple[str, str], str] = {}


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        parent = _dotted(node.value)
        return f"{parent}.{node.attr}" if parent else None
    return None


def _keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def unsafe_loads(source: str) -> list[str]:
    """Every unsafe deserialisation in a module's source, as 'line: call'."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"{node.lineno}: import {m}" for m in modules if m.split(".")[0] in UNSAFE_IMPORTS]
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name in UNSAFE_CALLS:
            found.append(f"{node.lineno}: {name}")
        elif name in {"torch.load"}:
            weights_only = _keyword(node, "weights_only")
            if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                found.append(f"{node.lineno}: torch.load without weights_only=True")
        elif name in {"np.load", "numpy.load"}:
            allow = _keyword(node, "allow_pickle")
            if allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False):
                found.append(f"{node.lineno}: {name} with allow_pickle")
        elif name in {"yaml.load"}:
            loader = _keyword(node, "Loader")
            if loader is None or (_dotted(loader) or "").split(".")[-1] not in {"SafeLoader", "CSafeLoader"}:
                found.append(f"{node.lineno}: yaml.load without SafeLoader")
    return found


@pytest.mark.parametrize(
    "snippet",
    [
        "import pickle\npickle.load(open('m', 'rb'))",
        "from joblib import load",
        "import torch\ntorch.load('m.pt')",
        "import torch\ntorch.load('m.pt', weights_only=False)",
        "import mlflow\nmlflow.sklearn.load_model('models:/m/1')",
        "import mlflow\nmlflow.pyfunc.load_model('models:/m/1')",
        "import pandas as pd\npd.read_pickle('f')",
        "import numpy as np\nnp.load('a.npy', allow_pickle=True)",
        "import yaml\nyaml.load(text, Loader=yaml.Loader)",
    ],
)
def test_the_scanner_catches_each_unsafe_pattern(snippet: str) -> None:
    assert unsafe_loads(snippet)


def test_the_scanner_accepts_the_safe_forms() -> None:
    safe = (
        "import torch, yaml, numpy as np\n"
        "torch.load('m.pt', weights_only=True)\nyaml.safe_load(t)\nyaml.load(t, Loader=yaml.SafeLoader)\n"
        "np.load('a.npy')\nimport skops.io as sio\nsio.load('m.skops', trusted=[])"
    )
    assert unsafe_loads(safe) == []


def test_no_unsafe_deserialisation_in_the_code() -> None:
    offenders = {}
    for folder in SCANNED:
        for path in sorted((REPO / folder).rglob("*.py")):
            relative = path.relative_to(REPO).as_posix()
            hits = [hit for hit in unsafe_loads(path.read_text()) if (relative, hit.split(": ", 1)[1]) not in ALLOWED]
            if hits:
                offenders[relative] = hits
    assert not offenders, f"unsafe deserialisation (use skops with TRUSTED_TYPES, torch weights_only=True): {offenders}"
