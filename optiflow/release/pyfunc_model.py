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

import logging
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from optiflow.errors import DataError, IntegrityError
from optiflow.io import file_digests, read_json, verify_digests, write_json
from optiflow.modeling.candidates import load_candidate
from optiflow.release.onnx import ONNX_ARTIFACT, OnnxExport, write_export
from optiflow.release.serving_spec import LABEL, PROBABILITY, REASON, SPEC_FILE, ServingSpec, check_rows

MODEL_DATA = "optiflow"  # the data folder's name; MLflow stores it as data/optiflow in the model
CANDIDATE = "candidate"  # the candidate folder, as load_candidate reads it
DIGEST_FILE = "sha256.json"  # {relative path: sha256} of every other file of the data folder
WHEELS = "wheels"  # the optiflow wheel the model's requirements install (data/optiflow/wheels/ in the model)

log = logging.getLogger(__name__)


FRAME = "frame"
OUTPUTS = (FRAME, LABEL, PROBABILITY)  # both columns, or one of them as a Series (what mlflow.evaluate expects)
MAX_LISTED = 10  # rejected rows named in one error; the count says how many more


@dataclass(frozen=True, eq=False)
class CandidateModel:
    """A verified candidate with its serving spec, as MLflow's clients use it.

    ``predict`` takes what pandas, CSV and JSON clients naturally send (ints for numeric columns, numeric text,
    None/NaN for missing; extra columns such as the target are ignored and logged), runs the row contract every
    Optiflow path runs (``check_rows``), and returns MLflow's classifier convention: a ``label`` column (the
    positive or negative label at the registered threshold) and the positive-class ``probability``. A row that
    breaks the contract is never scored: the call fails with one error naming each such row, column, rule and
    value, which `mlflow models serve` answers as HTTP 400.
    """

    model: Any  # a Pipeline scoring raw feature frames
    meta: dict[str, Any]  # the candidate's meta.json
    spec: ServingSpec
    output: str = FRAME  # what predict returns: one of OUTPUTS (``model_config={"output": ...}`` at load time)

    # no type hints here: MLflow would read them as an input schema and warn; the signature is logged instead
    def predict(self, model_input, params=None):
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        extra = [column for column in frame.columns if column not in self.spec.features]
        if extra:
            log.info("ignoring %d column(s) the model does not use: %s", len(extra), extra[:MAX_LISTED])
        try:
            good, rejects = check_rows(frame, self.spec, self.spec.contract)
        except DataError as exc:  # a feature column is missing
            raise _invalid_input(str(exc)) from None
        if len(rejects):
            listed = "; ".join(
                f"row {row}: {reason}" for row, reason in zip(rejects.index[:MAX_LISTED], rejects[REASON], strict=False)
            )
            more = f"; and {len(rejects) - MAX_LISTED} more" if len(rejects) > MAX_LISTED else ""
            raise _invalid_input(
                f"{len(rejects)} of {len(frame)} row(s) break the model's input contract, nothing was scored: "
                f"{listed}{more}"
            )
        probability = self.model.predict_proba(good[list(self.spec.features)])[:, 1]
        scored = pd.DataFrame({LABEL: self.spec.label_of(probability), PROBABILITY: probability}, index=frame.index)
        return scored if self.output == FRAME else scored[self.output]


def _invalid_input(message: str) -> Exception:
    """MLflow's own error for bad input: its clients show the message, `mlflow models serve` answers HTTP 400."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def write_model_data(
    folder: Path, candidate: Path, spec: ServingSpec, onnx: OnnxExport | None = None, wheel: Path | None = None
) -> Path:
    """Lay out the data folder: the candidate folder, the serving spec, the ONNX export with its parity figures
    (when there is one), the optiflow wheel (when given) and the digest of them all."""
    folder.mkdir(parents=True)
    shutil.copytree(candidate, folder / CANDIDATE)
    if wheel is not None:
        (folder / WHEELS).mkdir()
        shutil.copy2(wheel, folder / WHEELS / wheel.name)
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


def _load_pyfunc(data_path: str, model_config: dict[str, Any] | None = None) -> CandidateModel:
    """MLflow's entry point (``mlflow.pyfunc.load_model``, `mlflow models serve`, ``mlflow.models.evaluate``).
    ``model_config={"output": "label"}`` (or ``"probability"``) makes ``predict`` return that one column."""
    output = (model_config or {}).get("output", FRAME)
    if output not in OUTPUTS:
        raise _invalid_input(f"model_config output: {output!r} is not one of {list(OUTPUTS)}")
    return replace(load_model_data(Path(data_path)), output=output)
