"""The served pipeline (preprocessing and model) as one ONNX graph, allowed to serve only where it gives the Python
model's answers.

At registration ``export_checked`` converts the candidate (the sklearn families with skl2onnx, the MLP's preprocessing
with skl2onnx and its network with torch's exporter), runs it with ONNX Runtime on the validation rows and compares:
the largest absolute probability difference (at most ``PARITY_TOLERANCE``) and the decisions at the served threshold
(all identical). The graph and its parity figures are logged with the model version (``ONNX_ARTIFACT``); serving and
batch scoring use it when parity held and the runtime setting allows (``load_onnx``), and say why when they do not.

Inputs are one tensor per feature column: numeric columns as float64 (float32 for tree ensembles, whose ONNX Runtime
operator computes in float32), categorical ones as text, a missing value as "" (the imputer's fill replaces it).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from optiflow.config import Runtime
from optiflow.io import read_json, write_bytes, write_json
from optiflow.release.serving_spec import ServingSpec

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

log = logging.getLogger(__name__)

ONNX_ARTIFACT = "onnx"  # the model version's artifact folder: model.onnx and parity.json
ONNX_FILE, PARITY_FILE = "model.onnx", "parity.json"
OUTPUT = "probabilities"  # (rows, 2): negative and positive class, as predict_proba
# A chosen threshold sits assess.calibration.THRESHOLD_MARGIN (>= this) below its score: within this tolerance no row
# holding that score flips. Kept apart so the small scoring path imports neither sklearn nor matplotlib.
PARITY_TOLERANCE = 1e-5
ML_OPSET = 3  # ai.onnx.ml: double tensors for linear models and scalers


@dataclass(frozen=True)
class Parity:
    """The ONNX graph against the Python model on the same rows; ``passed`` only when both checks held."""

    passed: bool
    rows: int
    max_abs_diff: float | None  # largest |p_onnx - p_python| over the rows; None when nothing was compared
    decisions_differ: int | None  # rows labelled differently at the threshold
    threshold: float
    tolerance: float
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def failed(cls, rows: int, threshold: float, message: str) -> Parity:
        return cls(False, rows, None, None, threshold, PARITY_TOLERANCE, message)


class OnnxModel:
    """The exported pipeline on ONNX Runtime, with the Python model's contract: ``predict_proba`` on raw feature
    frames (typed as at training) returns (rows, 2) probabilities."""

    def __init__(self, model: bytes, spec: ServingSpec, threads: int = 1) -> None:
        from optiflow.modeling.onnx_runtime import session

        self.model, self.spec, self.threads = model, spec, threads
        self.session = session(model, threads)
        self.inputs = {item.name: item.type for item in self.session.get_inputs()}

    # Scoring chunks on Dask workers pickles the scorer: the graph travels as its bytes, the session is rebuilt there.
    def __getstate__(self) -> dict[str, Any]:
        return {"model": self.model, "spec": self.spec, "threads": self.threads}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["model"], state["spec"], state["threads"])

    def predict_proba(self, rows: pd.DataFrame) -> np.ndarray:
        feed = {column: _column(rows[column], kind, self.spec.dtypes[column]) for column, kind in self.inputs.items()}
        return np.asarray(self.session.run([OUTPUT], feed)[0], dtype=np.float64)


def _column(values: pd.Series, kind: str, training_dtype: str) -> np.ndarray:
    """One feature as the graph's (rows, 1) input: numbers as float, categories as the text the encoder was fitted
    on (training integers written without a decimal point), a missing (NaN) category as "". Categories are written
    once per distinct value (factorize), not once per row."""
    if kind != "tensor(string)":
        dtype = np.float32 if kind == "tensor(float)" else np.float64
        return pd.to_numeric(values, errors="coerce").to_numpy(dtype=dtype, na_value=np.nan).reshape(-1, 1)
    codes, distinct = pd.factorize(values)
    whole = training_dtype.startswith(("int", "uint"))
    names = [str(int(v)) if whole and isinstance(v, float) and v.is_integer() else str(v) for v in distinct]
    text = np.asarray([*names, ""], dtype=object)[codes]  # code -1 (missing) takes the last name, ""
    absent = np.flatnonzero(codes < 0)
    if len(absent):  # sklearn's imputers see NaN as missing but None as a value (an unknown category): so do we
        raw = values.to_numpy(dtype=object)
        text[absent[[raw[i] is None for i in absent]]] = "None"
    return text.reshape(-1, 1)


# ------------------------------------------------------------------------------------------------------------ export


def export_pipeline(model: Any, spec: ServingSpec) -> bytes:
    """The whole served pipeline as ONNX bytes: one input per feature, output ``probabilities`` (rows, 2). A calibrated
    model (``CalibratedClassifierCV`` over a ``FrozenEstimator`` of a fitted pipeline) is its pipeline's graph followed
    by its calibration map (``_with_calibration``)."""
    from sklearn.calibration import CalibratedClassifierCV

    if isinstance(model, CalibratedClassifierCV):
        return _with_calibration(model, spec).SerializeToString()
    return _pipeline_graph(model, spec).SerializeToString()


def _pipeline_graph(model: Pipeline, spec: ServingSpec, raw_scores: bool = False) -> Any:
    """The fitted pipeline's graph; with ``raw_scores`` its output holds decision_function's scores (column 1 for the
    positive class) instead of probabilities (sklearn families only: the MLP has no decision_function)."""
    import onnx
    from sklearn.pipeline import Pipeline

    from optiflow.modeling.mlp import TorchMLPClassifier

    if not isinstance(model, Pipeline):
        raise TypeError(
            f"the export covers fitted pipelines and their sigmoid or isotonic calibration, not a "
            f"{type(model).__name__}"
        )
    estimator = model[-1]
    if isinstance(estimator, TorchMLPClassifier):
        from optiflow.modeling.onnx_network import export_network

        preprocess = _convert(model[:-1], spec, numeric_float32=False)
        network = onnx.load_from_string(export_network(estimator.network_, estimator.spec_.n_features))
        return _with_network(preprocess, network)
    tree_ensemble = type(estimator).__name__.endswith("GradientBoostingClassifier")
    return _convert(model, spec, numeric_float32=tree_ensemble, raw_scores=raw_scores)


def _convert(model: Pipeline, spec: ServingSpec, numeric_float32: bool, raw_scores: bool = False) -> Any:
    """skl2onnx on a copy whose categorical steps speak text (see ``_text_categories``), with two converters of our
    own: the imputer for float64 numbers (ONNX Runtime's Imputer has no double kernel) and gradient boosting."""
    import skl2onnx
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, StringTensorType
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer

    from optiflow.modeling.onnx_runtime import OPSET

    ready, categorical = _text_categories(model)
    number = FloatTensorType if numeric_float32 else DoubleTensorType
    inputs = [
        (column, StringTensorType([None, 1]) if column in categorical else number([None, 1]))
        for column in spec.features
    ]
    return skl2onnx.convert_sklearn(
        ready,
        initial_types=inputs,
        target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET},
        options={id(ready[-1]): {"zipmap": False, "raw_scores": raw_scores}}
        if hasattr(ready[-1], "predict_proba")
        else None,
        custom_conversion_functions={
            SimpleImputer: _convert_imputer,
            HistGradientBoostingClassifier: _convert_gradient_boosting,
        },
    )


def _text_categories(model: Pipeline) -> tuple[Pipeline, set[str]]:
    """A copy of the fitted pipeline whose one-hot branches take text: the imputer's missing value becomes "" and its
    fills, like the encoder's categories, their text. Returns it with the columns that branch reads."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    ready = copy.deepcopy(model)
    categorical: set[str] = set()
    for step in ready.named_steps.values():
        if not isinstance(step, ColumnTransformer):
            continue
        for _, transformer, columns in step.transformers_:
            parts = list(transformer.named_steps.values()) if isinstance(transformer, Pipeline) else [transformer]
            if not any(isinstance(part, OneHotEncoder) for part in parts):
                continue
            categorical.update(columns)
            for part in parts:
                if isinstance(part, SimpleImputer):
                    part.missing_values = ""
                    part.statistics_ = np.array([str(value) for value in part.statistics_], dtype=object)
                elif isinstance(part, OneHotEncoder):
                    part.categories_ = [np.array([str(v) for v in values], dtype=object) for values in part.categories_]
    return ready, categorical


def _convert_imputer(scope: Any, operator: Any, container: Any) -> None:
    """Text: skl2onnx's own converter. Numbers: Where(IsNaN(x), fill, x) in the input's own float type."""
    from onnx import TensorProto
    from skl2onnx.common.data_types import DoubleTensorType, StringTensorType
    from skl2onnx.operator_converters.common import concatenate_variables
    from skl2onnx.operator_converters.imputer_op import convert_sklearn_imputer

    if isinstance(operator.inputs[0].type, StringTensorType):
        convert_sklearn_imputer(scope, operator, container)
        return
    double = isinstance(operator.inputs[0].type, DoubleTensorType)
    fills = operator.raw_operator.statistics_.astype(np.float64 if double else np.float32)
    features = concatenate_variables(scope, operator.inputs, container)
    fill, missing = scope.get_unique_variable_name("fill"), scope.get_unique_variable_name("missing")
    container.add_initializer(fill, TensorProto.DOUBLE if double else TensorProto.FLOAT, [1, fills.size], fills)
    container.add_node("IsNaN", [features], [missing], name=scope.get_unique_operator_name("IsNaN"))
    container.add_node(
        "Where",
        [missing, fill, features],
        [operator.outputs[0].full_name],
        name=scope.get_unique_operator_name("Where"),
    )


def _convert_gradient_boosting(scope: Any, operator: Any, container: Any) -> None:
    """skl2onnx's tree-ensemble converter, with its leaves' ``missing = False`` written as 0: the pinned protobuf
    refuses a bool among the integers of an ONNX attribute (skl2onnx 1.20 with protobuf 7)."""
    from skl2onnx.operator_converters.random_forest import convert_sklearn_random_forest_classifier

    add_node = container.add_node

    def add_node_with_integers(*args: Any, **attributes: Any) -> Any:
        flags = attributes.get("nodes_missing_value_tracks_true")
        if flags is not None:
            attributes["nodes_missing_value_tracks_true"] = [int(flag) for flag in flags]
        return add_node(*args, **attributes)

    container.add_node = add_node_with_integers
    try:
        convert_sklearn_random_forest_classifier(scope, operator, container, op_version=ML_OPSET)
    finally:
        del container.add_node


def _with_network(preprocess: Any, network: Any) -> Any:
    """One graph: the preprocessing's matrix cast to float32 into the network, its logit through a sigmoid into
    ``probabilities`` (1 - p, p)."""
    import onnx
    from onnx import TensorProto, helper

    from optiflow.modeling.onnx_network import INPUT
    from optiflow.modeling.onnx_network import OUTPUT as LOGIT

    network = onnx.compose.add_prefix(network, "network/")
    matrix = preprocess.graph.output[0].name
    nodes = [
        *preprocess.graph.node,
        helper.make_node("Cast", [matrix], [f"network/{INPUT}"], to=TensorProto.FLOAT, name="to_float32"),
        *network.graph.node,
        helper.make_node("Sigmoid", [f"network/{LOGIT}"], ["positive"], name="sigmoid"),
        helper.make_node("Sub", ["one", "positive"], ["negative"], name="complement"),
        helper.make_node("Concat", ["negative", "positive"], [OUTPUT], axis=1, name="probabilities"),
    ]
    graph = helper.make_graph(
        nodes,
        "optiflow_mlp",
        list(preprocess.graph.input),
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [None, 2])],
        [
            *preprocess.graph.initializer,
            *network.graph.initializer,
            helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]),
        ],
    )
    opsets = {entry.domain: entry.version for entry in [*preprocess.opset_import, *network.opset_import]}
    merged = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    merged.ir_version = min(preprocess.ir_version, network.ir_version)
    onnx.checker.check_model(merged)
    return merged


def _with_calibration(model: Any, spec: ServingSpec) -> Any:
    """The pipeline's graph, then the calibration map exactly as sklearn's ``CalibratedClassifierCV.predict_proba``
    applies it (binary): each calibrator maps the pipeline's positive-class decision_function score (its
    predict_proba column when it has none), in float64; the calibrated probabilities of the cross-fitted calibrators
    are averaged, each one's negative column being 1 - p."""
    import onnx
    from onnx import TensorProto, helper

    pipeline, calibrators = _calibration_parts(model)
    decision = hasattr(pipeline, "decision_function")  # sklearn's calibrators read it first, predict_proba otherwise
    graph = _pipeline_graph(pipeline, spec, raw_scores=decision)
    scores, score = "calibration/pipeline_output", "calibration/score"
    nodes = list(graph.graph.node)
    for node in nodes:  # the pipeline's output becomes an inner tensor: the calibrated one takes the name
        node.input[:] = [scores if name == OUTPUT else name for name in node.input]
        node.output[:] = [scores if name == OUTPUT else name for name in node.output]
    constants = {"calibration/positive_column": np.array([1], dtype=np.int64), "calibration/one": np.array([1.0])}
    nodes += [
        helper.make_node("Gather", [scores, "calibration/positive_column"], ["calibration/column"], axis=1),
        helper.make_node("Cast", ["calibration/column"], [score], to=TensorProto.DOUBLE),
    ]
    positives, negatives = [], []
    for index, calibrator in enumerate(calibrators):
        prefix = f"calibration/{index}/"
        map_nodes, map_constants = _calibration_map(calibrator, score, f"{prefix}p", prefix)
        nodes += [*map_nodes, helper.make_node("Sub", ["calibration/one", f"{prefix}p"], [f"{prefix}1-p"])]
        constants |= map_constants
        positives.append(f"{prefix}p")
        negatives.append(f"{prefix}1-p")
    constants["calibration/count"] = np.array([float(len(calibrators))])
    for side, terms in (("positive", positives), ("negative", negatives)):
        total = terms[0]  # summed in sklearn's order, then divided by the count
        for position, term in enumerate(terms[1:], start=1):
            nodes.append(helper.make_node("Add", [total, term], [f"calibration/{side}_sum{position}"]))
            total = f"calibration/{side}_sum{position}"
        nodes.append(helper.make_node("Div", [total, "calibration/count"], [f"calibration/{side}"]))
    nodes.append(
        helper.make_node(
            "Concat",
            ["calibration/negative", "calibration/positive"],
            [OUTPUT],
            axis=1,
            name="calibration/probabilities",
        )
    )
    for position, node in enumerate(nodes):
        node.name = node.name or f"calibration/{node.op_type}_{position}"
    calibrated = helper.make_graph(
        nodes,
        f"{graph.graph.name}_calibrated",
        list(graph.graph.input),
        [helper.make_tensor_value_info(OUTPUT, TensorProto.DOUBLE, [None, 2])],
        [*graph.graph.initializer, *(onnx.numpy_helper.from_array(v, name) for name, v in constants.items())],
    )
    merged = helper.make_model(calibrated, opset_imports=list(graph.opset_import))
    merged.ir_version = graph.ir_version
    onnx.checker.check_model(merged)
    return merged


def _calibration_parts(model: Any) -> tuple[Pipeline, list[Any]]:
    """The one frozen fitted pipeline under a binary sigmoid or isotonic ``CalibratedClassifierCV`` and its
    calibrators (one per cross-fitted fold); anything else is refused with the reason."""
    from sklearn.frozen import FrozenEstimator

    classifiers = getattr(model, "calibrated_classifiers_", [])
    inner = {id(c.estimator.estimator) for c in classifiers if isinstance(c.estimator, FrozenEstimator)}
    reasons = []
    if len(inner) != 1 or not all(isinstance(c.estimator, FrozenEstimator) for c in classifiers):
        reasons.append("its calibrators do not all wrap one FrozenEstimator of a fitted pipeline")
    if getattr(model, "method", None) not in ("sigmoid", "isotonic"):
        reasons.append(f"method {getattr(model, 'method', None)!r} (sigmoid and isotonic are exported)")
    if len(getattr(model, "classes_", [])) != 2 or any(len(c.calibrators) != 1 for c in classifiers):
        reasons.append("it is not a binary classifier with one calibrator per fold")
    if reasons:
        raise TypeError(f"a {type(model).__name__} the export does not cover: " + "; ".join(reasons))
    return classifiers[0].estimator.estimator, [c.calibrators[0] for c in classifiers]


def _calibration_map(calibrator: Any, score: str, output: str, prefix: str) -> tuple[list[Any], dict[str, Any]]:
    """Nodes from ``score`` (rows, 1) float64 to ``output``, and their constants. Sigmoid: expit(-(a * s + b)).
    Isotonic: s clipped to the fitted range, then ``np.interp`` over the thresholds: j the last threshold <= s and
    y_j + slope_j * (s - x_j), so a point on a plateau or a threshold gets y_j exactly, as numpy gives it."""
    from onnx import TensorProto, helper

    if type(calibrator).__name__ == "_SigmoidCalibration":
        nodes = [
            helper.make_node("Mul", [score, f"{prefix}a"], [f"{prefix}as"]),
            helper.make_node("Add", [f"{prefix}as", f"{prefix}b"], [f"{prefix}as+b"]),
            helper.make_node("Neg", [f"{prefix}as+b"], [f"{prefix}-(as+b)"]),
            helper.make_node("Sigmoid", [f"{prefix}-(as+b)"], [output]),
        ]
        return nodes, {f"{prefix}a": np.array([calibrator.a_], float), f"{prefix}b": np.array([calibrator.b_], float)}
    x = np.asarray(calibrator.X_thresholds_, dtype=np.float64)
    y = np.asarray(calibrator.y_thresholds_, dtype=np.float64)
    slopes = np.append((y[1:] - y[:-1]) / (x[1:] - x[:-1]), 0.0)  # the last threshold: y_j + 0 * 0
    constants = {
        f"{prefix}low": np.array([calibrator.X_min_], float),
        f"{prefix}high": np.array([calibrator.X_max_], float),
        f"{prefix}steps": np.append(x[1:], np.inf),  # j = how many of x[1:] are <= s (inf: never; keeps it non-empty)
        f"{prefix}x": x,
        f"{prefix}y": y,
        f"{prefix}slopes": slopes,
        f"{prefix}axis": np.array([1], dtype=np.int64),
    }
    nodes = [
        helper.make_node("Max", [score, f"{prefix}low"], [f"{prefix}above_low"]),
        helper.make_node("Min", [f"{prefix}above_low", f"{prefix}high"], [f"{prefix}s"]),
        helper.make_node("GreaterOrEqual", [f"{prefix}s", f"{prefix}steps"], [f"{prefix}passed"]),
        helper.make_node("Cast", [f"{prefix}passed"], [f"{prefix}passed_int"], to=TensorProto.INT64),
        helper.make_node("ReduceSum", [f"{prefix}passed_int", f"{prefix}axis"], [f"{prefix}j"], keepdims=1),
        helper.make_node("Gather", [f"{prefix}x", f"{prefix}j"], [f"{prefix}x_j"], axis=0),
        helper.make_node("Gather", [f"{prefix}y", f"{prefix}j"], [f"{prefix}y_j"], axis=0),
        helper.make_node("Gather", [f"{prefix}slopes", f"{prefix}j"], [f"{prefix}slope_j"], axis=0),
        helper.make_node("Sub", [f"{prefix}s", f"{prefix}x_j"], [f"{prefix}s-x_j"]),
        helper.make_node("Mul", [f"{prefix}slope_j", f"{prefix}s-x_j"], [f"{prefix}rise"]),
        helper.make_node("Add", [f"{prefix}rise", f"{prefix}y_j"], [output]),
    ]
    return nodes, constants


# ------------------------------------------------------------------------------------------------------------ parity


def check_parity(
    model: Any, exported: OnnxModel, rows: pd.DataFrame, threshold: float, tolerance: float = PARITY_TOLERANCE
) -> Parity:
    """The graph's probabilities and decisions against the Python model's on ``rows``."""
    if rows.empty:
        return Parity.failed(0, threshold, "no rows to compare on: parity not evaluated")
    python = model.predict_proba(rows)[:, 1]
    served = exported.predict_proba(rows)[:, 1]
    finite = bool(np.isfinite(served).all())
    diff = float(np.max(np.abs(served - python))) if finite else float("inf")
    differ = int(np.sum((served >= threshold) != (python >= threshold)))
    passed = finite and diff <= tolerance and differ == 0
    message = (
        f"max |p_onnx - p_python| {diff:.3g} (tolerance {tolerance:g}), {differ} of {len(rows)} decisions differ at "
        f"threshold {threshold:g}: " + ("parity holds" if passed else "parity FAILED")
    )
    return Parity(passed, len(rows), diff if finite else None, differ, threshold, tolerance, message)


@dataclass(frozen=True)
class OnnxExport:
    model: bytes | None  # None when the pipeline could not be exported
    parity: Parity


def export_checked(model: Pipeline, spec: ServingSpec, rows: pd.DataFrame) -> OnnxExport:
    """Export and check on ``rows`` (the validation split's features); an export that fails is reported, not raised:
    the version still registers and serves with the Python model."""
    try:
        exported = export_pipeline(model, spec)
        parity = check_parity(model, OnnxModel(exported, spec), rows[list(spec.features)], spec.threshold)
    except Exception as exc:  # skl2onnx, torch's exporter and ONNX Runtime raise their own types
        detail = str(exc).splitlines()[0][:300] if str(exc) else ""
        reason = f"no ONNX export: {type(exc).__name__}: {detail}"
        log.warning("%s; the Python model serves", reason)
        return OnnxExport(None, Parity.failed(len(rows), spec.threshold, reason))
    (log.info if parity.passed else log.warning)("ONNX export: %s", parity.message)
    return OnnxExport(exported, parity)


def write_export(folder: Path, export: OnnxExport) -> None:
    """model.onnx (when there is one) and parity.json into ``folder``."""
    if export.model is not None:
        write_bytes(folder / ONNX_FILE, export.model)
    write_json(folder / PARITY_FILE, export.parity.to_dict())


def load_onnx(folder: Path, spec: ServingSpec, runtime: Runtime, what: str) -> tuple[OnnxModel | None, str]:
    """The version's ONNX graph when ``runtime`` allows and its parity held at registration, with the reason either
    way; ``runtime: onnx`` without a usable graph is an error, ``auto`` falls back to the Python model."""
    from optiflow.errors import IntegrityError

    if runtime == "python":
        return None, "runtime python (set serve.runtime / score.runtime auto to use ONNX Runtime)"
    parity_file = folder / PARITY_FILE
    if not parity_file.is_file():
        reason = f"{what} was registered without an ONNX export"
    else:
        parity = read_json(parity_file)
        reason = "" if parity["passed"] else f"{what}: ONNX parity did not hold at registration ({parity['message']})"
    if not reason:
        return OnnxModel((folder / ONNX_FILE).read_bytes(), spec), f"ONNX Runtime ({parity['message']})"
    if runtime == "onnx":
        raise IntegrityError(f"{reason}; runtime onnx was asked for (use auto to fall back to the Python model)")
    return None, f"{reason}; the Python model serves"
