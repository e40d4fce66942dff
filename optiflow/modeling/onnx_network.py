"""The MLP's network and ONNX: export a torch network with torch's exporter, and run an ONNX network (e.g. one
ONNX Runtime quantized, optiflow.modeling.onnx_runtime) inside the usual torch skeleton (``OnnxNetwork``), so a
candidate whose network is ONNX saves, loads, travels to Dask workers and scores like any other MLP candidate.

This module imports torch at the top; optiflow.modeling.mlp imports it only when a network is ONNX.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from optiflow.modeling.onnx_runtime import OPSET, session

INPUT, OUTPUT = "features", "logit"
LAYER_INPUTS = {"Gemm": (1, 2), "QGemm": (3, 6)}  # where a layer node takes its weight and its bias


def export_network(network: nn.Module, n_features: int) -> bytes:
    """The float network as ONNX (input ``features`` float32 (rows, n), output ``logit`` (rows, 1)), through torch's
    TorchScript exporter: it needs no extra packages and maps Linear/ReLU to Gemm/Relu; dropout is gone in eval mode.
    A network with torch's dynamic int8 layers has no ONNX export (NotImplementedError)."""
    if isinstance(network, OnnxNetwork):
        return network.model_bytes()
    if any(hasattr(module, "_packed_params") for module in network.modules()):
        raise NotImplementedError("torch's dynamic int8 Linear layers (quantized::linear_dynamic) have no ONNX export")
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated in favour of the dynamo one
        torch.onnx.export(
            network.eval(),
            (torch.zeros(1, n_features),),
            buffer,
            dynamo=False,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "rows"}, OUTPUT: {0: "rows"}},
            opset_version=OPSET,
        )
    return buffer.getvalue()


class OnnxNetwork(nn.Module):
    """A network held as ONNX bytes (a uint8 buffer, so it lives in the state dict) and run by ONNX Runtime.

    ``forward`` takes and returns tensors like the torch network it replaces; the session is built on first use.
    """

    def __init__(self, model: bytes = b"") -> None:
        super().__init__()
        self.register_buffer("onnx", torch.tensor(np.frombuffer(model, dtype=np.uint8).copy(), dtype=torch.uint8))
        self._session: Any = None

    def model_bytes(self) -> bytes:
        return self.onnx.cpu().numpy().tobytes()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self._session is None:
            self._session = session(self.model_bytes())
        matrix = np.ascontiguousarray(features.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self._session.run([OUTPUT], {INPUT: matrix})[0])

    def weight_arrays(self) -> list[np.ndarray]:
        """The layers' weights and biases as stored (int8 weights and int32 biases once quantized), read at their
        places among the Gemm and QGemm nodes' inputs: quantization scales and zero points are not parameters."""
        import onnx
        from onnx import numpy_helper

        graph = onnx.load_from_string(self.model_bytes()).graph
        stored = {tensor.name: tensor for tensor in graph.initializer}
        return [
            numpy_helper.to_array(stored[node.input[place]]).copy()
            for node in graph.node
            for place in LAYER_INPUTS.get(node.op_type, ())
            if place < len(node.input) and node.input[place] in stored
        ]

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        stored = state_dict.get(prefix + "onnx")
        if stored is not None:  # another model's bytes: take its size before the base class copies them in
            self.onnx = torch.empty_like(stored)
            self._session = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_session": None}  # deep copies and pickles rebuild the session when used
