"""Compression of a trained MLP into deployable variants (optiflow.assess.compression measures them and chooses).

Techniques: global magnitude pruning (unstructured, fine-tuned; saved dense it is neither smaller nor faster, and the
report says so), structured pruning (whole hidden neurons removed, so layers shrink), int8 dynamic quantization
(optiflow.modeling.mlp.quantize_int8, and ONNX Runtime's static int8 of the exported network, ``<name>_onnx``: the
two are measured alike and only the faster one may be chosen) and distillation into a student with far fewer parameters.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from optiflow.errors import ConfigError
from optiflow.modeling.mlp import (
    FitSettings,
    NetworkSpec,
    TorchMLPClassifier,
    build_network,
    deterministic,
    fit_network,
    linear_layers,
    quantize_int8,
    weighted_bce,
)
from optiflow.parallel import FanOut, run_serially

if TYPE_CHECKING:
    import torch

    from optiflow.config import CompressParams, DistillParams

log = logging.getLogger(__name__)

UNCOMPRESSED = "fp32"
ONNX_SUFFIX = "_onnx"  # the ONNX Runtime int8 twin of a torch int8 variant


@dataclass(frozen=True)
class Variant:
    name: str
    technique: str
    model: TorchMLPClassifier
    note: str = ""


# ---------------------------------------------------------------------------------------------------- techniques


def magnitude_prune(
    model: TorchMLPClassifier, X: np.ndarray, y: np.ndarray, share: float, epochs: int
) -> TorchMLPClassifier:
    """Zero the `share` of smallest-magnitude weights across all layers, fine-tune with the mask held,
    then bake the zeros into plain dense weights."""
    import torch.nn.utils.prune as prune

    network = build_network(model.spec_)
    network.load_state_dict(model.network_.state_dict())
    targets = [(layer, "weight") for layer in linear_layers(network)]
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=share)
    _finetune(model, network, X, y, epochs)
    for layer, name in targets:
        prune.remove(layer, name)
    # prune.remove registers each weight again after its bias; a fresh network keeps the usual state-dict order, so
    # the variant saves to the same bytes here as after a save and load (or the trip back from a Dask worker).
    dense = build_network(model.spec_)
    dense.load_state_dict(network.state_dict())
    return model.with_network(dense, model.spec_)


def structured_prune(
    model: TorchMLPClassifier, X: np.ndarray, y: np.ndarray, keep: float, epochs: int
) -> TorchMLPClassifier:
    """Keep the `keep` share of each hidden layer's neurons (ranked by the norm of their incoming times outgoing
    weights), rebuild smaller Linear layers from the kept rows and columns, then fine-tune."""
    import torch

    layers = linear_layers(model.network_)
    widths = tuple(max(1, math.ceil(keep * size)) for size in model.spec_.hidden_sizes)
    spec = NetworkSpec(model.spec_.n_features, widths, model.spec_.dropout)
    network = build_network(spec)
    kept_inputs = torch.arange(spec.n_features)
    with torch.no_grad():
        for index, (source, target) in enumerate(zip(layers, linear_layers(network), strict=True)):
            if index < len(widths):
                importance = source.weight.norm(dim=1) * layers[index + 1].weight.norm(dim=0)
                kept = torch.sort(torch.topk(importance, widths[index]).indices).values
            else:
                kept = torch.arange(source.out_features)
            target.weight.copy_(source.weight[kept][:, kept_inputs])
            target.bias.copy_(source.bias[kept])
            kept_inputs = kept
    _finetune(model, network, X, y, epochs)
    return model.with_network(network, spec)


def quantize(model: TorchMLPClassifier) -> TorchMLPClassifier:
    return model.with_network(quantize_int8(model.network_), _quantized(model.spec_))


CALIBRATION_ROWS = 2048  # training rows ONNX Runtime's static quantization calibrates activation ranges on


def quantize_onnx(model: TorchMLPClassifier, X: np.ndarray, seed: int = 0) -> TorchMLPClassifier:
    """The float network exported to ONNX and quantized to int8 by ONNX Runtime (static, calibrated on up to
    CALIBRATION_ROWS of the training rows ``X``), run by ONNX Runtime."""
    from optiflow.modeling.onnx_network import INPUT, OnnxNetwork, export_network
    from optiflow.modeling.onnx_runtime import quantize_int8 as quantize_onnx_int8

    rows = np.random.default_rng(seed).permutation(len(X))[:CALIBRATION_ROWS]
    exported = export_network(model.network_, model.spec_.n_features)
    quantized = quantize_onnx_int8(exported, np.asarray(X, dtype=np.float32)[np.sort(rows)], INPUT)
    spec = NetworkSpec(model.spec_.n_features, model.spec_.hidden_sizes, model.spec_.dropout, "onnx_int8")
    return model.with_network(OnnxNetwork(quantized), spec)


def int8_variants(name: str, technique: str, model: TorchMLPClassifier, X: np.ndarray) -> list[Variant]:
    """``model`` quantized by torch (``name``, dynamic) and by ONNX Runtime (``name`` + ``_onnx``, static)."""
    return [
        Variant(name, f"{technique} (torch, dynamic)", quantize(model)),
        Variant(name + ONNX_SUFFIX, f"{technique} (ONNX Runtime, static)", quantize_onnx(model, X, model.seed)),
    ]


def distill(
    model: TorchMLPClassifier, X: np.ndarray, y: np.ndarray, teacher_proba: np.ndarray, settings: DistillParams
) -> TorchMLPClassifier:
    """Train a small student on the teacher's temperature-softened probabilities and the true labels:
    loss = alpha * T^2 * BCE(student / T, teacher / T) + (1 - alpha) * BCE(student, label)."""
    import torch

    spec = student_spec(model.spec_, settings)
    with deterministic(model.seed):
        student = build_network(spec)
    clipped = np.clip(teacher_proba, 1e-6, 1 - 1e-6)
    soft = 1.0 / (1.0 + np.exp(-np.log(clipped / (1 - clipped)) / settings.temperature))
    targets = np.column_stack([soft, y]).astype(np.float32)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    temperature, alpha = settings.temperature, settings.alpha

    def loss(logits: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        taught = bce(logits / temperature, goal[:, :1]) * temperature**2
        return alpha * taught + (1 - alpha) * bce(logits, goal[:, 1:2])

    fit_network(student, X, targets, y, model.fit_settings(), loss, model.seed)
    return model.with_network(student, spec)


def network_parameters(spec: NetworkSpec) -> int:
    widths = (spec.n_features, *spec.hidden_sizes, 1)
    return sum(inputs * outputs + outputs for inputs, outputs in itertools.pairwise(widths))


def student_spec(teacher: NetworkSpec, settings: DistillParams) -> NetworkSpec:
    """The student's layers: `hidden_sizes` when given, else the widest `hidden_layers` equal layers whose parameter
    count is at most the teacher's / `min_param_ratio`; a student that cannot meet the ratio is a config error."""
    budget = network_parameters(teacher) / settings.min_param_ratio
    if settings.hidden_sizes is not None:
        spec = NetworkSpec(teacher.n_features, tuple(settings.hidden_sizes))
    else:
        width = max(teacher.hidden_sizes)
        while (
            width > 1
            and network_parameters(NetworkSpec(teacher.n_features, (width,) * settings.hidden_layers)) > budget
        ):
            width -= 1
        spec = NetworkSpec(teacher.n_features, (width,) * settings.hidden_layers)
    if network_parameters(spec) > budget:
        raise ConfigError(
            f"compress.distill: a student with hidden layers {list(spec.hidden_sizes)} has "
            f"{network_parameters(spec)} parameters, more than the model's {network_parameters(teacher)} / "
            f"min_param_ratio {settings.min_param_ratio:g}; use fewer or narrower layers"
        )
    return spec


@dataclass(frozen=True)
class VariantBuild:
    """One independent piece of building the variants: a technique at one setting and what it trains on. Pieces
    may run in other processes: the classifier travels as its state dict bytes (TorchMLPClassifier.__getstate__)."""

    technique: Literal["int8", "magnitude", "structured", "distilled"]
    setting: float | None  # the pruning share or kept share; None for int8 and distillation
    model: TorchMLPClassifier
    X: np.ndarray
    y: np.ndarray
    settings: CompressParams
    teacher_proba: np.ndarray | None = None


def variant_builds(
    model: TorchMLPClassifier,
    X: np.ndarray,
    y: np.ndarray,
    settings: CompressParams,
    teacher_proba: np.ndarray | None = None,
) -> list[VariantBuild]:
    """One piece per technique and setting in params.yaml `compress:`, in report order."""
    plan: list[tuple[Any, float | None]] = [("int8", None)] if settings.quantize else []
    plan += [("magnitude", share) for share in settings.sparsities]
    plan += [("structured", keep) for keep in settings.structured_keep]
    if settings.distill.enabled and teacher_proba is not None:
        plan.append(("distilled", None))
    return [VariantBuild(technique, setting, model, X, y, settings, teacher_proba) for technique, setting in plan]


_TORCH_STATE = threading.Lock()


def build_variant(piece: VariantBuild) -> list[Variant]:
    """The variants of one piece (structured pruning also yields its int8 version). Each technique seeds torch
    itself, so a piece builds the same weights in any process and order; torch's seed and deterministic flag are
    process-wide, so pieces sharing a process (threads) take turns."""
    model, X, y, settings, setting = piece.model, piece.X, piece.y, piece.settings, piece.setting
    with _TORCH_STATE:
        if piece.technique == "int8":
            return int8_variants("int8", "int8 quantization", model, X)
        if piece.technique == "magnitude":
            return [
                Variant(
                    f"magnitude{round(setting * 100)}",
                    f"global magnitude pruning {setting:.0%} + fine-tune",
                    magnitude_prune(model, X, y, setting, settings.finetune_epochs),
                    "unstructured zeros saved dense: no size or speed gain by themselves",
                )
            ]
        if piece.technique == "structured":
            name = f"structured{round(setting * 100)}"
            pruned = structured_prune(model, X, y, setting, settings.finetune_epochs)
            variants = [Variant(name, f"structured pruning, {setting:.0%} of neurons kept + fine-tune", pruned)]
            if settings.quantize:
                variants += int8_variants(f"{name}_int8", "structured pruning + int8", pruned, X)
            return variants
        return [
            Variant(
                "distilled",
                f"student {list(student_spec(model.spec_, settings.distill).hidden_sizes)} distilled",
                distill(model, X, y, piece.teacher_proba, settings.distill),
            )
        ]


def build_variants(
    model: TorchMLPClassifier,
    X: np.ndarray,
    y: np.ndarray,
    settings: CompressParams,
    teacher_proba: np.ndarray | None = None,
    fan_out: FanOut = run_serially,
) -> list[Variant]:
    """The uncompressed model first, then one variant per technique and setting in params.yaml `compress:`; the
    pieces run through `fan_out` (threads, Dask workers), their variants come back in report order."""
    built = fan_out(build_variant, variant_builds(model, X, y, settings, teacher_proba))
    return [Variant(UNCOMPRESSED, "none", model), *itertools.chain.from_iterable(built)]


def sparsity(model: TorchMLPClassifier) -> float:
    """Share of zero weights over the float Linear layers' weight matrices (biases excluded)."""
    weights = [layer.weight.detach() for layer in linear_layers(model.network_)]
    total = sum(w.numel() for w in weights)
    return float(sum(int((w == 0).sum()) for w in weights) / total) if total else 0.0


def parameter_counts(model: TorchMLPClassifier) -> tuple[int, int]:
    """(parameters, non-zero parameters) of the network; int8 layers count their non-zero int8 codes."""
    tensors = _weight_tensors(model.network_)
    return sum(t.numel() for t in tensors), sum(int((t != 0).sum()) for t in tensors)


def _weight_tensors(network: torch.nn.Module) -> list[torch.Tensor]:
    import torch

    if hasattr(network, "weight_arrays"):  # an ONNX network: its int8 matrices and float biases
        return [torch.from_numpy(array) for array in network.weight_arrays()]
    tensors = []
    for module in network:
        if hasattr(module, "_packed_params"):
            weight, bias = module._packed_params._weight_bias()
            tensors += [weight.int_repr(), *([bias] if bias is not None else [])]
        else:
            tensors += [p.detach() for p in module.parameters()]
    return tensors


def _finetune(model: TorchMLPClassifier, network: torch.nn.Module, X: np.ndarray, y: np.ndarray, epochs: int) -> None:
    pos_weight = (len(y) - y.sum()) / max(y.sum(), 1) if model.class_weight == "balanced" else None
    settings: FitSettings = model.fit_settings(max_epochs=epochs)
    fit_network(network, X, y.astype(np.float32)[:, None], y, settings, weighted_bce(pos_weight), model.seed)


def _quantized(spec: NetworkSpec) -> NetworkSpec:
    return NetworkSpec(spec.n_features, spec.hidden_sizes, spec.dropout, "dynamic_int8")


# ---------------------------------------------------------------------------------------------------- measurement


# ---------------------------------------------------------------------------------------------------- selection


# ---------------------------------------------------------------------------------------------------- the stage core


# ---------------------------------------------------------------------------------------------------- report
