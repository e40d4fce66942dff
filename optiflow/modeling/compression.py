"""Compression of a trained MLP into deployable variants, each measured the same way, and a fairness-aware choice.

Techniques: global magnitude pruning (unstructured, fine-tuned; saved dense it is neither smaller nor faster, and the
report says so), structured pruning (whole hidden neurons removed, so layers shrink), int8 dynamic quantization
(optiflow.modeling.mlp.quantize_int8) and distillation into a student with far fewer parameters.
Compression tends to hurt under-represented groups more than the average (Hooker et al., 2020): the selection
policy bounds every group's ROC AUC drop, not just the overall one, and keeps each rejected variant with its reason.
"""

from __future__ import annotations

import itertools
import logging
import math
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

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
    save_network,
    weighted_bce,
)
from optiflow.parallel import FanOut, run_serially

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure

    from optiflow.config import CompressParams, DistillParams, MeasureParams, SelectParams

log = logging.getLogger(__name__)

UNCOMPRESSED = "fp32"


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
            return [Variant("int8", "dynamic int8 quantization", quantize(model))]
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
                variants.append(Variant(f"{name}_int8", "structured pruning + int8", quantize(pruned)))
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


@dataclass(frozen=True)
class EvalSplit:
    """Rows a variant is judged on: the preprocessed matrix, the 0/1 labels and the sensitive columns."""

    matrix: np.ndarray
    y: np.ndarray
    sensitive: pd.DataFrame


def measure_variant(
    variant: Variant,
    splits: Mapping[str, EvalSplit],
    threshold_of: Callable[[np.ndarray], float],
    reference: Mapping[str, np.ndarray] | None,
    settings: MeasureParams,
    min_group_size: int,
) -> dict[str, Any]:
    """Size, parameters, latency and throughput, then quality and group metrics on each split.

    `threshold_of(scores_on_valid)` picks the decision threshold (evaluate's policy); `reference` holds the
    uncompressed model's labels per split, against which label flips are counted.
    """
    model = variant.model
    params, nonzero = parameter_counts(model)
    row = {
        "variant": variant.name,
        "technique": variant.technique,
        "note": variant.note,
        "bytes": artifact_bytes(model),
        "params": params,
        "nonzero_params": nonzero,
        "weight_sparsity": round(sparsity(model), 4),
        "hidden_sizes": list(model.spec_.hidden_sizes),
        "dtype": "int8" if model.spec_.quantization else "float32",
        "latency_ms": latency(model, splits["test"].matrix, settings),
    }
    largest = str(max(settings.batch_sizes))
    row["rows_per_s"] = round(int(largest) / (row["latency_ms"][largest]["p50"] / 1000.0), 1)
    threshold = threshold_of(model.predict_proba(splits["valid"].matrix)[:, 1])
    row["threshold"] = threshold
    for split, rows in splits.items():
        scores = model.predict_proba(rows.matrix)[:, 1]
        row[split] = quality(rows, scores, threshold, None if reference is None else reference[split], min_group_size)
    return row


def artifact_bytes(model: TorchMLPClassifier) -> int:
    """Bytes of network.pt + network.json as saved for deployment (the preprocessing is the same for all)."""
    with tempfile.TemporaryDirectory() as folder:
        return sum((Path(folder) / name).stat().st_size for name in save_network(model, Path(folder)))


def latency(model: TorchMLPClassifier, matrix: np.ndarray, settings: MeasureParams) -> dict[str, dict[str, float]]:
    """p50 / p95 milliseconds of predict_proba per batch size, after warm-up, with a fixed torch thread count."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        result = {}
        for batch in settings.batch_sizes:
            rows = np.resize(matrix, (batch, matrix.shape[1])).astype(np.float32)
            for _ in range(settings.warmup):
                model.predict_proba(rows)
            times = []
            for _ in range(settings.repeats):
                started = time.perf_counter()
                model.predict_proba(rows)
                times.append((time.perf_counter() - started) * 1000.0)
            result[str(batch)] = {
                "p50": round(float(np.percentile(times, 50)), 4),
                "p95": round(float(np.percentile(times, 95)), 4),
            }
        return result
    finally:
        torch.set_num_threads(previous)


def quality(
    rows: EvalSplit, scores: np.ndarray, threshold: float, reference: np.ndarray | None, min_group_size: int
) -> dict[str, Any]:
    """ROC AUC overall and, via fairlearn's MetricFrame, AUC / TPR / size per group of each sensitive feature,
    plus label flips against the reference labels overall and per group."""
    from fairlearn.metrics import MetricFrame
    from sklearn.metrics import roc_auc_score

    labels = (scores >= threshold).astype(int)
    flips = np.zeros(len(labels), dtype=int) if reference is None else (labels != reference).astype(int)
    result: dict[str, Any] = {
        "roc_auc": round(float(roc_auc_score(rows.y, scores)), 6),
        "flips": int(flips.sum()),
        "flip_share": round(float(flips.mean()), 6),
        "groups": {},
    }

    def group_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
        return float(roc_auc_score(y_true, y_score)) if len(np.unique(y_true)) == 2 else float("nan")

    def tpr(y_true: np.ndarray, y_score: np.ndarray) -> float:
        positives = y_true == 1
        return float((y_score[positives] >= threshold).mean()) if positives.any() else float("nan")

    def count(y_true: np.ndarray, y_score: np.ndarray) -> float:
        return float(len(y_true))

    for column in rows.sensitive.columns:
        groups = rows.sensitive[column].astype(str).to_numpy()
        frame = MetricFrame(
            metrics={"roc_auc": group_auc, "tpr": tpr, "rows": count},
            y_true=rows.y,
            y_pred=scores,
            sensitive_features=pd.Series(groups, name=column),
        ).by_group
        flipped = pd.Series(flips).groupby(groups).sum()
        result["groups"][column] = {
            str(group): {
                "rows": int(values["rows"]),
                "judged": int(values["rows"]) >= min_group_size,
                "roc_auc": _rounded(values["roc_auc"]),
                "tpr": _rounded(values["tpr"]),
                "flips": int(flipped.get(group, 0)),
                "flip_share": round(float(flipped.get(group, 0)) / max(int(values["rows"]), 1), 6),
            }
            for group, values in frame.iterrows()
        }
    return result


def _rounded(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


# ---------------------------------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class Judgement:
    variant: str
    passed: bool
    auc_drop: float
    worst_group_drop: float | None
    worst_group: str | None
    allowed_group_drop: float
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Choice:
    chosen: str | None
    objective: str
    judgements: tuple[Judgement, ...]
    message: str
    fallback: bool = False


def judge(row: Mapping[str, Any], base: Mapping[str, Any], policy: SelectParams, split: str = "valid") -> Judgement:
    """One variant against the uncompressed model: overall AUC drop, and every judged group's AUC drop bounded by
    `max_group_drop_ratio` x max(overall drop, `group_drop_floor`)."""
    auc_drop = base[split]["roc_auc"] - row[split]["roc_auc"]
    allowed = policy.max_group_drop_ratio * max(auc_drop, policy.group_drop_floor)
    worst, worst_group = None, None
    for column, groups in row[split]["groups"].items():
        for group, values in groups.items():
            before = base[split]["groups"][column][group]["roc_auc"]
            if not values["judged"] or values["roc_auc"] is None or before is None:
                continue
            drop = before - values["roc_auc"]
            if worst is None or drop > worst:
                worst, worst_group = drop, f"{column}={group}"
    reasons = []
    if auc_drop > policy.max_auc_drop:
        reasons.append(f"ROC AUC drop {auc_drop:.4f} > {policy.max_auc_drop:.4f}")
    if worst is not None and worst > allowed:
        reasons.append(
            f"group {worst_group} AUC drop {worst:.4f} > {allowed:.4f} "
            f"({policy.max_group_drop_ratio:g} x max(overall drop {auc_drop:.4f}, floor {policy.group_drop_floor:g}))"
        )
    return Judgement(
        row["variant"], not reasons, round(auc_drop, 6), _rounded(worst), worst_group, round(allowed, 6), tuple(reasons)
    )


def select_variant(rows: Sequence[Mapping[str, Any]], policy: SelectParams, split: str = "valid") -> Choice:
    """The passing compressed variant that minimises the objective; none passing falls back to the uncompressed
    model with a message naming each variant's reason. The uncompressed row (first) is the baseline, not a choice."""
    base, *candidates = rows
    largest = str(max(int(batch) for batch in base["latency_ms"]))
    judgements = tuple(judge(row, base, policy, split) for row in candidates)
    passing = [row for row, verdict in zip(candidates, judgements, strict=True) if verdict.passed]
    if policy.objective == "latency":
        objective, key = f"p50 latency at batch {largest}", lambda row: row["latency_ms"][largest]["p50"]
    else:
        objective, key = "artifact bytes", lambda row: row["bytes"]
    if not passing:
        reasons = "; ".join(f"{j.variant}: {', '.join(j.reasons)}" for j in judgements) or "no variants were built"
        return Choice(
            None,
            objective,
            judgements,
            f"no compressed variant meets the policy on the {split} split; keeping the uncompressed model ({reasons})",
            fallback=True,
        )
    best = min(passing, key=key)
    return Choice(
        best["variant"],
        objective,
        judgements,
        f"{best['variant']} chosen: lowest {objective} ({key(best):g} vs {key(base):g} uncompressed) among "
        f"{len(passing)} of {len(candidates)} variants meeting the policy on the {split} split",
    )


# ---------------------------------------------------------------------------------------------------- the stage core


@dataclass(frozen=True)
class CompressionResult:
    variants: tuple[Variant, ...]
    rows: tuple[dict[str, Any], ...]
    choice: Choice

    def chosen(self) -> Variant | None:
        return next((v for v in self.variants if v.name == self.choice.chosen), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "chosen": self.choice.chosen,
            "fallback": self.choice.fallback,
            "message": self.choice.message,
            "objective": self.choice.objective,
            "variants": {row["variant"]: row for row in self.rows},
            "judgements": {j.variant: asdict(j) for j in self.choice.judgements},
        }


def compress_model(
    model: TorchMLPClassifier,
    X_train: np.ndarray,
    y_train: np.ndarray,
    splits: Mapping[str, EvalSplit],
    threshold_of: Callable[[np.ndarray], float],
    settings: CompressParams,
    teacher_proba: np.ndarray | None = None,
    fan_out: FanOut = run_serially,
) -> CompressionResult:
    """Build every variant (the pieces through `fan_out`), then measure each the same way in this process on the
    same rows, and choose by the policy: timings from other processes or machines would not be comparable.

    `splits` must hold "valid" (the policy judges there) and "test" (reported; latency is timed on its rows).
    """
    variants = build_variants(model, X_train, y_train, settings, teacher_proba, fan_out)
    rows: list[dict[str, Any]] = []
    reference: dict[str, np.ndarray] | None = None
    for variant in variants:
        row = measure_variant(
            variant, splits, threshold_of, reference, settings.measure, settings.select.min_group_size
        )
        rows.append(row)
        if reference is None:  # the uncompressed model comes first: its labels are what flips are counted against
            reference = {
                split: (model.predict_proba(rows_.matrix)[:, 1] >= row["threshold"]).astype(int)
                for split, rows_ in splits.items()
            }
        log.info(
            "%s: %d bytes, %d params (%d non-zero), p50 %s ms, valid AUC %.4f, test AUC %.4f",
            variant.name,
            row["bytes"],
            row["params"],
            row["nonzero_params"],
            {b: v["p50"] for b, v in row["latency_ms"].items()},
            row["valid"]["roc_auc"],
            row["test"]["roc_auc"],
        )
    choice = select_variant(rows, settings.select)
    (log.warning if choice.fallback else log.info)("%s", choice.message)
    return CompressionResult(tuple(variants), tuple(rows), choice)


# ---------------------------------------------------------------------------------------------------- report


def report_rows(rows: Sequence[Mapping[str, Any]], choice: Choice) -> list[dict[str, Any]]:
    """One flat row per variant (the Prefect table, the CSV behind the plots)."""
    verdicts = {j.variant: j for j in choice.judgements}
    flat = []
    for row in rows:
        verdict = verdicts.get(row["variant"])
        flat.append(
            {
                "variant": row["variant"],
                "chosen": row["variant"] == choice.chosen,
                "passed": None if verdict is None else verdict.passed,
                "bytes": row["bytes"],
                "params": row["params"],
                "nonzero_params": row["nonzero_params"],
                **{f"p50_ms_batch{b}": v["p50"] for b, v in row["latency_ms"].items()},
                **{f"p95_ms_batch{b}": v["p95"] for b, v in row["latency_ms"].items()},
                "rows_per_s": row["rows_per_s"],
                "valid_roc_auc": row["valid"]["roc_auc"],
                "test_roc_auc": row["test"]["roc_auc"],
                "test_flip_share": row["test"]["flip_share"],
                "worst_group_drop": None if verdict is None else verdict.worst_group_drop,
                "reason": "baseline" if verdict is None else ("; ".join(verdict.reasons) or "meets the policy"),
            }
        )
    return flat


def tradeoff_figures(table: pd.DataFrame) -> dict[str, Figure]:
    """Size vs test AUC and latency vs test AUC, one labelled point per variant (green passes, red fails)."""
    from matplotlib.figure import Figure

    latency_column = max((c for c in table.columns if c.startswith("p50_ms_batch")), key=lambda c: int(c[12:]))
    figures = {}
    for name, column, label in (
        ("size_vs_auc", "bytes", "network artifact (bytes)"),
        ("latency_vs_auc", latency_column, f"p50 latency, batch {latency_column[12:]} (ms)"),
    ):
        figure = Figure(figsize=(6.5, 4.2))
        axes = figure.subplots()
        colours = ["tab:blue" if p is None else ("tab:green" if p else "tab:red") for p in table["passed"]]
        axes.scatter(table[column], table["test_roc_auc"], c=colours, s=30)
        for _, row in table.iterrows():
            marker = " (chosen)" if row["chosen"] else ""
            axes.annotate(
                row["variant"] + marker,
                (row[column], row["test_roc_auc"]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        axes.set_xscale("log")
        axes.set(xlabel=label, ylabel="test ROC AUC", title=f"{label.split(' (')[0]} vs test ROC AUC")
        axes.text(
            0.01,
            0.01,
            "blue: uncompressed, green: meets the policy, red: fails",
            transform=axes.transAxes,
            fontsize=7,
            color="dimgrey",
        )
        figure.tight_layout()
        figures[name] = figure
    return figures
