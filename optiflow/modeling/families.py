"""Model families: each is one sklearn Pipeline with its own preprocessing, so it scores raw rows."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sklearn.base import ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from optiflow.config import Params
from optiflow.data.schema import Schema
from optiflow.errors import ConfigError
from optiflow.modeling.mlp import TorchMLPClassifier


@dataclass(frozen=True)
class Family:
    make: Callable[..., ClassifierMixin]
    defaults: dict[str, Any] = field(default_factory=dict)
    scale_numeric: bool = True


FAMILIES: dict[str, Family] = {
    "logistic_regression": Family(LogisticRegression, {"max_iter": 5000}, scale_numeric=True),
    "hist_gradient_boosting": Family(HistGradientBoostingClassifier, {}, scale_numeric=False),
    "mlp": Family(TorchMLPClassifier, {}, scale_numeric=True),
}


def takes_device(family: str) -> bool:
    """Whether the family's estimator trains on a device (train.device): the PyTorch MLP does, sklearn's do not."""
    spec = FAMILIES[family]
    return "device" in spec.make(**spec.defaults).get_params()


def with_device(families: Mapping[str, Mapping[str, Any] | None], device: str) -> dict[str, dict[str, Any]]:
    """train.families with train.device set on every family that takes a device, so tuning trains where train does."""
    return {
        family: {**(hyperparameters or {}), **({"device": device} if takes_device(family) else {})}
        for family, hyperparameters in families.items()
    }


def check_hyperparameters(family: str, hyperparameters: dict[str, Any]) -> None:
    """Raise ValueError naming the family and key when a hyperparameter is unknown or invalid."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {sorted(FAMILIES)}")
    estimator = FAMILIES[family].make(**FAMILIES[family].defaults)
    allowed = estimator.get_params()
    unknown = sorted(set(hyperparameters) - set(allowed))
    if unknown:
        raise ValueError(f"{family}: unknown hyperparameter(s) {unknown}; allowed: {sorted(allowed)}")
    estimator.set_params(**hyperparameters)
    try:
        estimator._validate_params()
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{family}: {exc}") from None


def check_settings(params: Params) -> None:
    """Every family named in train.families and tune.spaces exists, and every hyperparameter and search bound is one
    its estimator accepts; one ConfigError lists every problem (params.yaml is checked before any work starts)."""
    problems = []
    for family, hyperparameters in params.train.families.items():
        try:
            check_hyperparameters(family, hyperparameters or {})
        except ValueError as exc:
            problems.append(f"  train.families.{family}: {exc}")
    for family, space in params.tune.spaces.items():
        if family not in FAMILIES:
            problems.append(f"  tune.spaces.{family}: unknown model family {family!r}; known: {sorted(FAMILIES)}")
            continue
        spec = FAMILIES[family]
        allowed = spec.make(**spec.defaults).get_params()
        for key, param in space.items():
            if key not in allowed:
                problems.append(
                    f"  tune.spaces.{family}.{key}: not a hyperparameter of {spec.make.__name__}; "
                    f"allowed: {sorted(allowed)}"
                )
                continue
            for value in param.values_to_check():
                try:
                    check_hyperparameters(family, {key: value})
                except ValueError as exc:
                    problems.append(f"  tune.spaces.{family}.{key}: value {value!r} is invalid: {exc}")
    if problems:
        raise ConfigError("params.yaml is invalid:\n" + "\n".join(problems))


def build_pipeline(
    family: str, hyperparameters: dict[str, Any], schema: Schema, seed: int, device: str = "auto"
) -> Pipeline:
    """Preprocessing (impute, scale, one-hot ignoring unknown categories) followed by the estimator.

    `device` (params.yaml train.device) reaches the estimators that take one (the MLP); the others ignore it.
    """
    spec = FAMILIES[family]
    numeric_steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median"))]
    if spec.scale_numeric:
        numeric_steps.append(("scale", StandardScaler()))
    preprocess = ColumnTransformer(
        [
            ("numeric", Pipeline(numeric_steps), list(schema.numeric)),
            (
                "categorical",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="most_frequent")),
                        ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
                    ]
                ),
                list(schema.categorical),
            ),
        ],
        remainder="drop",
    )
    estimator = spec.make(**{**spec.defaults, **hyperparameters})
    if "random_state" in estimator.get_params():
        estimator.set_params(random_state=seed)
    if "device" in estimator.get_params():
        estimator.set_params(device=device)
    return Pipeline([("preprocess", preprocess), ("model", estimator)])
