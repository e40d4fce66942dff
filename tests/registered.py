"""Small registered models in a temporary tracking store, built the way the register stage builds them."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from optiflow.config import Config, load_config
from optiflow.data.ingest import coerce
from optiflow.data.schema import resolve_schema
from optiflow.data.split import labels
from optiflow.modeling.candidates import save_candidate
from optiflow.modeling.families import build_pipeline
from optiflow.release.registry import connect, log_model_version
from optiflow.release.serving_spec import ServingSpec
from tests.conftest import make_project


def typed_frame(config: Config, raw: pd.DataFrame) -> pd.DataFrame:
    return coerce(raw, config.params.data, Path("sample"))


def register_model(
    config: Config,
    frame: pd.DataFrame,
    family: str = "logistic_regression",
    threshold: float = 0.4,
    parity_rows: pd.DataFrame | None = None,
    **hyper,
) -> str:
    """Fit ``family`` on the typed frame, save it as a candidate and register it (exported to ONNX and checked on
    ``parity_rows`` when given, as the register stage does with the validation split); returns the version."""
    params = config.params
    schema = resolve_schema(frame, params.data)
    features = frame[list(schema.features)]
    model = build_pipeline(family, hyper, schema, params.seed).fit(features, labels(frame, params.data))
    (config.root / "candidates").mkdir(exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{family}-", dir=config.root / "candidates"))
    save_candidate(folder, model, {"family": family, "features": list(schema.features)})
    connect(config)
    spec = ServingSpec.from_frame(frame, schema.features, threshold, params.data, params.validation)
    return log_model_version(
        folder,
        model,
        model_name=params.registry.model_name,
        input_example=features.head(5),
        spec=spec,
        parity_rows=parity_rows,
    )


def registry_project(root: Path, sample: pd.DataFrame) -> Config:
    config = load_config(make_project(root, sample))
    connect(config)
    return config
