"""The registered model's MLflow loader: a custom pyfunc flavor whose MLmodel file names this module
(``loader_module: optiflow.release.pyfunc_model``). MLflow imports it from the installed optiflow package and calls
``_load_pyfunc(data_path)``; no code is stored with the model, so loading one runs no code from the artifact store.

The data folder holds the candidate folder, the serving spec, the ONNX export (optiflow.release.onnx) and
``DIGEST_FILE`` (the sha256 of every other data file). Every file is checked against it before anything is
deserialised, so ``mlflow.pyfunc.load_model``, `mlflow models serve` and `optiflow serve-api` all refuse a changed,
missing or added data file.

What the model cannot check by itself: a rewritten MLmodel file (naming another loader or adding a ``code:``
folder) or a digest file rewritten together with the files it lists. `optiflow serve-api` and `optiflow predict`
first check every stored file, MLmodel and the digest file included, against the registry's record
(``optiflow.release.registry.load_registered``).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optiflow.errors import IntegrityError
from optiflow.io import file_digests, read_json, verify_digests, write_json
from optiflow.modeling.candidates import load_candidate
from optiflow.release.onnx import ONNX_ARTIFACT, OnnxExport, write_export
from optiflow.release.serving_spec import SPEC_FILE, ServingSpec

MODEL_DATA = "optiflow"  # the data folder's name; MLflow stores it as data/optiflow in the model
CANDIDATE = "candidate"  # the candidate folder, as load_candidate reads it
DIGEST_FILE = "sha256.json"  # {relative path: sha256} of every other file of the data folder


@dataclass(frozen=True, eq=False)
class CandidateModel:
    """A verified candidate with its serving spec; ``predict`` returns ``predict_proba`` (n x 2)."""

    model: Any  # a Pipeline scoring raw feature frames
    meta: dict[str, Any]  # the candidate's meta.json
    spec: ServingSpec

    # no type hints here: MLflow would read them as an input schema and warn; the signature is logged instead
    def predict(self, model_input, params=None):
        return self.model.predict_proba(model_input)


def write_model_data(folder: Path, candidate: Path, spec: ServingSpec, onnx: OnnxExport | None = None) -> Path:
    """Lay out the data folder: the candidate folder, the serving spec, the ONNX export with its parity figures
    (when there is one) and the digest of them all."""
    folder.mkdir(parents=True)
    shutil.copytree(candidate, folder / CANDIDATE)
    spec.save(folder / SPEC_FILE)
    if onnx is not None:
        write_export(folder / ONNX_ARTIFACT, onnx)
    write_json(folder / DIGEST_FILE, file_digests(folder))
    return folder


def load_model_data(folder: Path) -> CandidateModel:
    """Check every file of the data folder against its digest file, then load the candidate and the spec."""
    folder = Path(folder)
    digest = folder / DIGEST_FILE
    if not digest.is_file():
        raise IntegrityError(f"{folder}: no {DIGEST_FILE}, so the model files cannot be verified; refusing to load")
    verify_digests(folder, read_json(digest), f"model data {folder}", record=DIGEST_FILE, ignore=(DIGEST_FILE,))
    model, meta = load_candidate(folder / CANDIDATE)
    return CandidateModel(model, meta, ServingSpec.load(folder / SPEC_FILE))


def _load_pyfunc(data_path: str) -> CandidateModel:
    """MLflow's entry point (``mlflow.pyfunc.load_model``, `mlflow models serve`)."""
    return load_model_data(Path(data_path))
