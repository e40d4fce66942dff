"""Compression: each technique changes what it claims, variants round-trip exactly, and the fairness-aware policy
chooses, rejects with reasons, and falls back when nothing qualifies."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from torch import nn

from optiflow.assess.compression import (
    EvalSplit,
    artifact_bytes,
    compress_model,
    report_rows,
    select_variant,
    tradeoff_figures,
)
from optiflow.config import CompressParams, DistillParams, SelectParams
from optiflow.errors import ConfigError
from optiflow.modeling.candidates import TRUSTED_TYPES
from optiflow.modeling.compression import (
    UNCOMPRESSED,
    distill,
    magnitude_prune,
    network_parameters,
    parameter_counts,
    quantize,
    quantize_onnx,
    sparsity,
    structured_prune,
    student_spec,
)
from optiflow.modeling.mlp import TorchMLPClassifier, linear_layers, load_network, save_network

FAST = CompressParams(
    finetune_epochs=3,
    measure={"batch_sizes": (1, 256), "repeats": 3, "warmup": 1},
    select={"min_group_size": 20},
)


def _data(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 6)).astype(np.float32)
    y = (X[:, 0] - X[:, 1] + 0.5 * rng.normal(size=rows) > 0).astype(int)
    return X, y, pd.DataFrame({"group": rng.choice(["a", "b"], rows, p=[0.8, 0.2])})


@pytest.fixture(scope="module")
def fitted() -> tuple[TorchMLPClassifier, np.ndarray, np.ndarray]:
    X, y, _ = _data(400, 0)
    model = TorchMLPClassifier(hidden_units=32, max_epochs=30, patience=5, batch_size=64, random_state=0).fit(X, y)
    return model, X, y


def _same_predictions(model: TorchMLPClassifier, X: np.ndarray, folder: Path) -> None:
    save_network(model, folder)
    assert np.array_equal(load_network(folder).predict_proba(X), model.predict_proba(X))


def test_magnitude_pruning_reaches_the_sparsity_but_saved_dense_is_not_smaller(fitted, tmp_path: Path) -> None:
    model, X, y = fitted
    pruned = magnitude_prune(model, X, y, 0.8, epochs=3)
    assert sparsity(model) < 0.01 and sparsity(pruned) == pytest.approx(0.8, abs=0.01)
    params, nonzero = parameter_counts(pruned)
    assert params == parameter_counts(model)[0] and nonzero < 0.3 * params
    assert artifact_bytes(pruned) == artifact_bytes(model)  # zeros saved dense take the same room, byte for byte
    assert not hasattr(linear_layers(pruned.network_)[0], "weight_mask")  # baked in, a plain Linear again
    _same_predictions(pruned, X, tmp_path)


def test_structured_pruning_removes_neurons_so_layers_shrink(fitted, tmp_path: Path) -> None:
    model, X, y = fitted
    pruned = structured_prune(model, X, y, 0.5, epochs=3)
    assert pruned.spec_.hidden_sizes == (16, 16)
    shapes = [tuple(layer.weight.shape) for layer in linear_layers(pruned.network_)]
    assert shapes == [(16, 6), (16, 16), (1, 16)]
    assert parameter_counts(pruned)[0] < 0.4 * parameter_counts(model)[0]
    assert artifact_bytes(pruned) < artifact_bytes(model)
    _same_predictions(pruned, X, tmp_path)


def test_structured_pruning_rounds_the_kept_share_up(fitted) -> None:
    model, X, y = fitted
    kept_all = structured_prune(model, X, y, 0.99, epochs=1)  # ceil(0.99 * 32) = 32: nothing removed
    assert kept_all.spec_.hidden_sizes == (32, 32)


def test_int8_quantization_stores_int8_weights_and_round_trips_exactly(fitted, tmp_path: Path) -> None:
    model, X, _ = fitted
    quantized = quantize(model)
    packed = [m for m in quantized.network_ if hasattr(m, "_packed_params")]
    assert len(packed) == 3 and not any(isinstance(m, nn.Linear) for m in quantized.network_)
    assert all(str(m._packed_params._weight_bias()[0].dtype) == "torch.qint8" for m in packed)
    assert quantized.spec_.quantization == "dynamic_int8" and model.spec_.quantization is None
    assert artifact_bytes(quantized) < artifact_bytes(model)
    assert np.abs(quantized.predict_proba(X) - model.predict_proba(X)).max() < 0.05
    _same_predictions(quantized, X, tmp_path)
    served = sio.loads(sio.dumps(quantized), trusted=list(TRUSTED_TYPES))  # the MLflow (skops) path
    assert np.array_equal(served.predict_proba(X), quantized.predict_proba(X))


def test_onnx_int8_runs_on_onnx_runtime_and_round_trips_exactly(fitted, tmp_path: Path) -> None:
    model, X, _ = fitted
    quantized = quantize_onnx(model, X)
    assert quantized.spec_.quantization == "onnx_int8" and linear_layers(quantized.network_) == []
    assert {array.dtype.name for array in quantized.network_.weight_arrays()} >= {"int8"}
    assert parameter_counts(quantized)[0] == parameter_counts(model)[0]  # the same weights, stored as int8
    assert artifact_bytes(quantized) < artifact_bytes(model)
    assert 0 < np.abs(quantized.predict_proba(X) - model.predict_proba(X)).max() < 0.05  # quantized, not a copy
    _same_predictions(quantized, X, tmp_path)
    served = sio.loads(sio.dumps(quantized), trusted=list(TRUSTED_TYPES))  # the MLflow (skops) path
    assert np.array_equal(served.predict_proba(X), quantized.predict_proba(X))


def test_only_the_faster_of_two_int8_runtimes_may_be_chosen() -> None:
    rows = [BASE, _row("int8", 0.849, 0.799, ms=4.0, size=300), _row("int8_onnx", 0.849, 0.799, ms=2.0, size=350)]
    choice = select_variant(rows, SelectParams(objective="size"))
    assert choice.chosen == "int8_onnx"  # smaller int8 loses: it is the slower runtime of the same network
    verdicts = {j.variant: j for j in choice.judgements}
    reason = verdicts["int8"].reasons[0]
    assert not verdicts["int8"].passed and reason == (
        "slower int8 runtime than int8_onnx "
        "(int8_onnx 1.99x as fast, 95% interval 1.96-2.02x, over 30 paired rounds at batch 4096)"
    )


def test_int8_runtimes_timing_cannot_tell_apart_are_one_choice_made_by_size() -> None:
    torch_int8 = _row("int8", 0.849, 0.799, ms=2.0, size=300, noise=0.3)
    onnx_int8 = _row("int8_onnx", 0.849, 0.799, ms=1.9, size=350, noise=0.3)
    assert onnx_int8["latency_ms"]["4096"]["p50"] < torch_int8["latency_ms"]["4096"]["p50"]  # lower by noise alone
    choice = select_variant([BASE, torch_int8, onnx_int8], SelectParams(objective="latency"))
    assert choice.chosen == "int8"
    reason = {j.variant: j for j in choice.judgements}["int8_onnx"].reasons[0]
    assert "no faster than int8 beyond noise" in reason and "larger (350 vs 300 bytes)" in reason


def test_latency_objective_prefers_the_smaller_of_variants_timing_cannot_tell_apart() -> None:
    fast_large = _row("fast_large", 0.849, 0.799, ms=2.0, size=500, noise=0.3)
    tied = SelectParams(objective="latency")
    small = _row("small", 0.849, 0.799, ms=2.2, size=200, noise=0.3)
    assert fast_large["latency_ms"]["4096"]["p50"] < small["latency_ms"]["4096"]["p50"]  # by noise alone
    choice = select_variant([BASE, fast_large, small], tied)
    assert choice.chosen == "small" and "as fast as fast_large within noise" in choice.message
    assert "smaller (200 vs 500 bytes)" in choice.message
    choice = select_variant([BASE, fast_large, _row("small", 0.849, 0.799, ms=3.0, size=200, noise=0.02)], tied)
    assert choice.chosen == "fast_large" and "lowest p50 latency at batch 4096 (" in choice.message


def test_distilled_student_has_at_least_ten_times_fewer_parameters(fitted, tmp_path: Path) -> None:
    model, X, y = fitted
    teacher = np.clip(X[:, 0] - X[:, 1], -3, 3) / 6 + 0.5
    student = distill(model, X, y, teacher, DistillParams())
    assert parameter_counts(model)[0] >= 10 * parameter_counts(student)[0]
    assert student.spec_.hidden_sizes == student_spec(model.spec_, DistillParams()).hidden_sizes
    assert network_parameters(student.spec_) == parameter_counts(student)[0]
    _same_predictions(student, X, tmp_path)


def test_a_student_too_large_for_the_ratio_is_a_config_error(fitted) -> None:
    model, _, _ = fitted
    with pytest.raises(ConfigError, match="min_param_ratio 10"):
        student_spec(model.spec_, DistillParams(hidden_sizes=(32,)))


def _row(
    variant: str, auc: float, group_b: float, ms: float, size: int, b_rows: int = 100, noise: float = 0.02
) -> dict:
    """A measured variant: 30 timed rounds around `ms` with log-normal `noise`, drawn per variant name."""
    groups = {
        "group=a": {"rows": 400, "judged": True, "roc_auc": auc},
        "group=b": {"rows": b_rows, "judged": b_rows >= 50, "roc_auc": group_b},
    }
    jitter = np.exp(noise * np.random.default_rng(zlib.crc32(variant.encode())).normal(size=30))
    latency = {
        batch: {"p50": float(np.median(rounds)), "rounds": rounds.tolist()}
        for batch, rounds in (("1", ms / 10 * jitter), ("4096", ms * jitter))
    }
    return {
        "variant": variant,
        "bytes": size,
        "latency_ms": latency,
        "valid": {"roc_auc": auc, "groups": {"group": groups}},
    }


BASE = _row(UNCOMPRESSED, 0.85, 0.80, ms=10.0, size=1000)


def test_policy_picks_the_fastest_variant_that_passes_and_says_why_others_fail() -> None:
    rows = [
        BASE,
        _row("slow_ok", 0.849, 0.799, ms=8.0, size=900),
        _row("fast_ok", 0.848, 0.797, ms=4.0, size=700),
        _row("fastest_but_inaccurate", 0.83, 0.78, ms=1.0, size=100),
        _row("unfair", 0.849, 0.78, ms=2.0, size=300),
    ]
    choice = select_variant(rows, SelectParams(objective="latency"))
    assert choice.chosen == "fast_ok" and not choice.fallback
    verdicts = {j.variant: j for j in choice.judgements}
    assert "ROC AUC drop 0.0200 > 0.0050" in verdicts["fastest_but_inaccurate"].reasons[0]
    assert (
        verdicts["unfair"].worst_group == "group=b"
        and "group group=b AUC drop 0.0200 > 0.0050" in (verdicts["unfair"].reasons[0])
    )
    assert len(choice.judgements) == 4  # every variant kept, failing ones with their reason


def test_policy_by_size_and_small_groups_are_not_judged() -> None:
    rows = [BASE, _row("small", 0.849, 0.70, ms=9.0, size=200, b_rows=10), _row("fast", 0.849, 0.799, ms=1.0, size=900)]
    choice = select_variant(rows, SelectParams(objective="size"))
    assert choice.chosen == "small" and choice.objective == "artifact bytes"


def test_a_policy_no_variant_meets_falls_back_to_the_uncompressed_model() -> None:
    rows = [BASE, _row("int8", 0.849, 0.799, ms=4.0, size=300), _row("pruned", 0.84, 0.79, ms=2.0, size=200)]
    choice = select_variant(rows, SelectParams(max_auc_drop=0.0))
    assert choice.chosen is None and choice.fallback
    assert "no compressed variant meets the policy" in choice.message and "keeping the uncompressed model" in (
        choice.message
    )
    assert "int8: ROC AUC drop 0.0010 > 0.0000" in choice.message and "pruned: ROC AUC drop" in choice.message


def test_compress_model_measures_every_variant_alike(fitted) -> None:
    model, X, y = fitted
    splits = {name: EvalSplit(*_data(200, seed)) for name, seed in (("valid", 1), ("test", 2))}
    teacher = model.predict_proba(X)[:, 1]
    result = compress_model(model, X, y, splits, lambda scores: 0.5, FAST, teacher)
    names = [row["variant"] for row in result.rows]
    assert names == [
        "fp32",
        "int8",
        "int8_onnx",
        "magnitude50",
        "magnitude80",
        "structured50",
        "structured50_int8",
        "structured50_int8_onnx",
        "distilled",
    ]
    base = result.rows[0]
    assert base["test"]["flips"] == 0 and base["valid"]["groups"]["group"]["group=a"]["flips"] == 0
    for row in result.rows:
        assert set(row["latency_ms"]) == {"1", "256"} and row["latency_ms"]["256"]["p95"] >= 0
        assert len(row["latency_ms"]["256"]["rounds"]) == FAST.measure.repeats  # paired across variants by round
        assert row["rows_per_s"] > 0 and row["params"] >= row["nonzero_params"] > 0
        assert set(row["test"]["groups"]["group"]) == {"group=a", "group=b"}
        assert {"roc_auc", "tpr", "flips", "flip_share", "rows"} <= set(row["test"]["groups"]["group"]["group=b"])
    assert result.rows[1]["dtype"] == "int8" and result.rows[5]["hidden_sizes"] == [16, 16]
    assert [row["runtime"] for row in result.rows[1:3]] == ["torch", "onnxruntime"]
    report = result.to_dict()
    assert set(report["judgements"]) == set(names[1:])
    assert (result.chosen() is None) == report["fallback"]
    table = pd.DataFrame(report_rows(result.rows, result.choice))
    assert table["variant"].tolist() == names and table["chosen"].sum() == (0 if report["fallback"] else 1)
    assert table.loc[0, "reason"] == "baseline" and set(tradeoff_figures(table)) == {"size_vs_auc", "latency_vs_auc"}
