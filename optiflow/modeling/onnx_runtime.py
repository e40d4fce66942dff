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

OPSET = 18  # the default-domain opset every exported graph uses (skl2onnx and torch must agree to be merged)


def session(model: bytes, threads: int = 1) -> Any:
    """An ONNX Runtime CPU session over the model bytes, quiet and on ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def quantize_int8(model: bytes) -> bytes:
    """ONNX Runtime's dynamic int8 quantization of every MatMul/Gemm weight (activations quantized per call)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root_logger = logging.getLogger()
    level = root_logger.level
    root_logger.setLevel(logging.ERROR)  # it advises pre-processing on the root logger for every call
    try:
        with tempfile.TemporaryDirectory(prefix="optiflow-int8-") as folder:
            source, target = Path(folder) / "fp32.onnx", Path(folder) / "int8.onnx"
            source.write_bytes(model)
            quantize_dynamic(source, target, weight_type=QuantType.QInt8)
            return target.read_bytes()
    finally:
        root_logger.setLevel(level)
