"""ONNX Runtime sessions and int8 quantization, without torch: what scoring an exported graph needs, so a process
that only serves one never imports torch or sklearn.

Sessions run on one intra-op thread: a single row gains nothing from more, and batch scoring and serving get their
parallelism from several calls at once (ONNX Runtime sessions may be run from many threads).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

OPSET = 18  # the default-domain opset every exported graph uses (skl2onnx and torch must agree to be merged)


def session(model: bytes, threads: int = 1) -> Any:
    """An ONNX Runtime CPU session over the model bytes, quiet and on ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def quantize_int8(model: bytes, calibration: np.ndarray, input_name: str) -> bytes:
    """ONNX Runtime's static int8 quantization (int8 weights, uint8 activations) with activation ranges calibrated
    on ``calibration`` rows (training rows: nothing is chosen on them), names compacted (``compact_names``).

    Static, not dynamic: at the default width (64) measuring each call's activation range cost about as much as int8
    saved (bench/compression.py), and fixed ranges make a row's score independent of the rows batched with it. The
    QOperator format (QGemm kernels) rather than QDQ: the same kernels run (ONNX Runtime fuses QDQ into them), and the
    file holds no DequantizeLinear node per weight: 9.6 KB instead of 11.2 KB at width 64, before compacting."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Rows(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(
                [{input_name: calibration[start : start + 256]} for start in range(0, len(calibration), 256)]
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    root_logger = logging.getLogger()
    level = root_logger.level
    root_logger.setLevel(logging.ERROR)  # it advises pre-processing on the root logger for every call
    try:
        with tempfile.TemporaryDirectory(prefix="optiflow-int8-") as folder:
            source, target = Path(folder) / "fp32.onnx", Path(folder) / "int8.onnx"
            source.write_bytes(model)
            quantize_static(
                source,
                target,
                Rows(),
                quant_format=QuantFormat.QOperator,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
            return compact_names(target.read_bytes())
    finally:
        root_logger.setLevel(level)


def compact_names(model: bytes) -> bytes:
    """The same graph with its inner tensors named by number and its nodes, shape annotations and doc strings left
    out; the graph's inputs and outputs keep their names. The quantizer's names (e.g.
    ``/net/net.0/Gemm_output_0_quantized``) were an eighth of a width-64 int8 file, and each appears several times."""
    import onnx

    proto = onnx.load_from_string(model)
    graph = proto.graph
    kept = {value.name for value in [*graph.input, *graph.output]}
    short: dict[str, str] = {}

    def rename(name: str) -> str:
        if not name or name in kept:
            return name
        return short.setdefault(name, format(len(short), "x"))

    for tensor in graph.initializer:
        tensor.name = rename(tensor.name)
    for node in graph.node:
        node.input[:] = [rename(name) for name in node.input]
        node.output[:] = [rename(name) for name in node.output]
        node.name = node.doc_string = ""
    del graph.value_info[:]
    proto.doc_string = graph.doc_string = proto.producer_name = proto.producer_version = ""
    return proto.SerializeToString()
