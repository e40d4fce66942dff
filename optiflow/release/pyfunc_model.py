"""The registered model's MLflow entry point ("models from code"): MLflow copies this file next to the model's
artifacts and runs it when the model is loaded, so no Python object is pickled into the registry.

The artifacts are a candidate folder (loaded through ``load_candidate``, which works for every family and checks the
sha256 in its meta.json) and the serving spec; ``predict`` returns ``predict_proba`` (n x 2), as `mlflow models serve`
and monitoring expect.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


class CandidateModel(PythonModel):
    def load_context(self, context: Any) -> None:
        from optiflow.modeling.candidates import load_candidate

        self.model, self.meta = load_candidate(Path(context.artifacts["candidate"]))

    # no type hints here: MLflow would read them as an input schema and warn; the signature is logged instead
    def predict(self, context, model_input, params=None):
        return self.model.predict_proba(model_input)


mlflow.models.set_model(CandidateModel())
