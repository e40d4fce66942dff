"""A trained candidate on disk: skops files (never pickle, types checked against an allowlist) plus meta.json with
each file's sha256. The PyTorch MLP's folder holds its preprocessing (skops) and its network (state dict + JSON).
sklearn and torch load inside the functions: reading a candidate's meta.json (serving its ONNX graph) needs neither.

The selected candidate is saved calibrated: scikit-learn's ``CalibratedClassifierCV(FrozenEstimator(pipeline))`` as
one skops file, whatever the family (the MLP's network goes in as its state-dict bytes, see TorchMLPClassifier)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from optiflow.errors import IntegrityError

if TYPE_CHECKING:
    from sklearn.base import ClassifierMixin
    from sklearn.pipeline import Pipeline

# Every type a saved Optiflow pipeline may contain; anything else in a model file is refused.
TRUSTED_TYPES: tuple[str, ...] = (
    "numpy.dtype",
    "optiflow.modeling.mlp.TorchMLPClassifier",  # its state holds the network as state-dict bytes (weights_only)
    # the calibrated candidate: sklearn's holder of a fitted model + calibration map, and the sigmoid map (two
    # floats); CalibratedClassifierCV, FrozenEstimator and IsotonicRegression are public types skops trusts itself
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn._loss.link.Interval",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn.compose._column_transformer.ColumnTransformer",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "sklearn.impute._base.SimpleImputer",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._encoders.OneHotEncoder",
    "sklearn.preprocessing._data.StandardScaler",
)


def save_model(model: ClassifierMixin, path: Path) -> None:
    import skops.io as sio

    _forget_the_fit_thread_count(model)
    Path(path).write_bytes(_canonical_skops(sio.dumps(model)))


def _forget_the_fit_thread_count(model: Any) -> None:
    """A gradient-boosting model's bin mapper keeps the number of OpenMP threads its fit ran on (the machine's cores)
    as the thread count for binning more data, which scoring never does. None means the running machine's count, so
    the same data and seed give the same bytes on a machine with other cores (dvc.lock reproduces across machines)."""
    fitted = uncalibrated(model)
    estimator = fitted[-1] if hasattr(fitted, "steps") else fitted
    if hasattr(estimator, "_bin_mapper"):
        estimator._bin_mapper.n_threads = None


def _canonical_skops(raw: bytes) -> bytes:
    """skops names objects by memory address and stamps zip entries with the time: renumber the ids in order of
    appearance and fix the timestamps, so the same model always gives the same bytes (stable DVC hashes)."""
    import io
    import json
    import zipfile

    ids: dict[int, int] = {}

    def renumber(node: Any) -> Any:
        if isinstance(node, list):
            return [renumber(item) for item in node]
        if not isinstance(node, dict):
            return node
        result = {}
        for key, value in node.items():
            if key == "__id__" and isinstance(value, int):
                result[key] = ids.setdefault(value, len(ids))
            elif key == "file" and isinstance(value, str) and value.endswith(".npy") and value[:-4].isdigit():
                result[key] = f"{ids.setdefault(int(value[:-4]), len(ids))}.npy"
            else:
                result[key] = renumber(value)
        return result

    source = zipfile.ZipFile(io.BytesIO(raw))
    schema = renumber(json.loads(source.read("schema.json")))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as target:
        target.writestr(_entry("schema.json"), json.dumps(schema, indent=1).encode())
        renamed = {
            (f"{ids[int(name[:-4])]}.npy" if name[:-4].isdigit() else name): name
            for name in source.namelist()
            if name != "schema.json"
        }
        for new_name in sorted(renamed):
            target.writestr(_entry(new_name), source.read(renamed[new_name]))
    return buffer.getvalue()


def _entry(name: str) -> Any:
    import zipfile

    info = zipfile.ZipInfo(name)  # fixed 1980-01-01 timestamp
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def load_model(path: Path) -> ClassifierMixin:
    """Load a skops file, refusing any type outside TRUSTED_TYPES."""
    import skops.io as sio

    untrusted = sorted(set(sio.get_untrusted_types(file=path)) - set(TRUSTED_TYPES))
    if untrusted:
        raise IntegrityError(f"{path}: refusing to load a model file containing untrusted types {untrusted}")
    return sio.load(path, trusted=list(TRUSTED_TYPES))


MODEL_FILE = "model.skops"


PREPROCESS_FILE = "preprocess.skops"


META_FILE = "meta.json"


def save_candidate(folder: Path, model: ClassifierMixin, meta: dict[str, Any]) -> dict[str, Any]:
    """Write the model files + meta.json (each file's sha256) into ``folder``, which the caller stages atomically.

    sklearn families and calibrated candidates are one skops file; the MLP is its preprocessing (skops) plus
    network.json and its network (network.pt, or network.onnx for a network ONNX Runtime runs).
    """
    from sklearn.pipeline import Pipeline

    from optiflow.io import sha256_file, write_json
    from optiflow.modeling.mlp import TorchMLPClassifier, save_network

    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(model, Pipeline) and isinstance(model[-1], TorchMLPClassifier):
        save_model(model[:-1], folder / PREPROCESS_FILE)
        names = [PREPROCESS_FILE, *save_network(model[-1], folder)]
    else:
        save_model(model, folder / MODEL_FILE)
        names = [MODEL_FILE]
    meta = {**meta, "files": {name: sha256_file(folder / name) for name in names}}
    write_json(folder / META_FILE, meta)
    return meta


def load_candidate(folder: Path) -> tuple[Any, dict[str, Any]]:
    """Load a candidate (a Pipeline scoring raw rows, or the calibrated model around one) after checking each file
    against the sha256 recorded at save."""
    from sklearn.pipeline import Pipeline

    from optiflow.io import read_json, sha256_file
    from optiflow.modeling.mlp import load_network

    meta = read_json(folder / META_FILE)
    for name, recorded in meta["files"].items():
        actual = sha256_file(folder / name)
        if actual != recorded:
            raise IntegrityError(f"{folder / name}: sha256 {actual} does not match {recorded} recorded at training")
    if PREPROCESS_FILE in meta["files"]:
        preprocess = load_model(folder / PREPROCESS_FILE)
        return Pipeline([*preprocess.steps, ("model", load_network(folder))]), meta
    return load_model(folder / MODEL_FILE), meta


def uncalibrated(model: Any) -> Pipeline:
    """The fitted pipeline inside a calibrated candidate (the model itself when it is not calibrated): what SHAP
    explains, since a calibration map is monotone: it rescales the scores without reordering them."""
    from sklearn.calibration import CalibratedClassifierCV

    if isinstance(model, CalibratedClassifierCV):
        return model.estimator.estimator  # CalibratedClassifierCV(FrozenEstimator(pipeline))
    return model


def uses_torch(model: Any) -> bool:
    """Whether scoring the model needs torch (an MLP, compressed or not, calibrated or not): its registered
    requirements must then list torch, which the loader of every other family does without."""
    from optiflow.modeling.mlp import TorchMLPClassifier

    inner = uncalibrated(model)
    return isinstance(inner[-1] if hasattr(inner, "steps") else inner, TorchMLPClassifier)


def candidate_bytes(folder: Path) -> int:
    """Bytes of every model file of a candidate: what deploying it ships."""
    from optiflow.io import read_json

    return sum((folder / name).stat().st_size for name in read_json(folder / META_FILE)["files"])


def candidate_folders(*roots: Path) -> dict[str, Path]:
    """Candidate name (its folder name) -> folder, over the trained and the compressed candidates."""
    folders: dict[str, Path] = {}
    for root in roots:
        if root.is_dir():
            folders.update({p.name: p for p in sorted(root.iterdir()) if (p / META_FILE).is_file()})
    return folders
