"""Compression benchmark on the shipped data: what int8, structured pruning and distillation buy, in one run.

Every figure is measured side by side in this process, on the same test rows, with the same torch thread count,
and printed as is (goals are checked by reading, never asserted):
  1. int8 vs fp32: network file size ratio (goal >= 3.5x), p50 latency ratio at batch 4096 (goal >= 1.5x at equal
     ROC AUC within 0.005), batch 1; int8 by torch (dynamic) and by ONNX Runtime (static, calibrated on training
     rows; compress may choose only one: the faster where paired timing tells them apart, else the smaller),
     fp32 as the PyTorch model (what the variants table compares with) and on ONNX Runtime;
  2. structured pruning of half the hidden neurons (fine-tuned): latency ratio (goal >= 1.5x), ROC AUC drop
     (goal <= 0.005);
  3. distilled student (soft labels of the best family by validation ROC AUC + true labels): parameter ratio
     (goal >= 10x), share of the teacher's (AUC - 0.5) kept (goal >= 97%), rows/s vs the teacher;
  4. the MLP's rows/s at batch 4096 against this machine's float32 matmul peak (a large-matrix probe, same
     threads) for the same FLOPs, as a percentage.
The MLP is trained at params.yaml's width and at a deployment-sized width (256 by default): int8 kernels only pay
off once the layers are large enough, so both are shown.

    python bench/compression.py                    # widths: params.yaml's and 256, 1 thread (about 3 minutes)
    python bench/compression.py --widths 256 --threads 2
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline

from optiflow.assess.compression import artifact_bytes, latency, other_int8_runtime
from optiflow.config import MeasureParams, SelectParams, load_config
from optiflow.data.ingest import load_dataset
from optiflow.data.schema import resolve_schema
from optiflow.data.split import labels, split_dataset
from optiflow.modeling.compression import distill, parameter_counts, quantize, quantize_onnx, structured_prune
from optiflow.modeling.families import build_pipeline
from optiflow.modeling.mlp import TorchMLPClassifier, linear_layers
from optiflow.modeling.onnx_network import OnnxNetwork, export_network
from optiflow.timing import timed

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import Recorder

BATCHES = (1, 4096)


def matmul_peak_gflops(threads: int, sizes: tuple[int, ...] = (512, 1024, 2048), repeats: int = 20) -> float:
    """Best float32 GFLOP/s of large square matmuls with `threads`: the fastest call of each size, the best size.

    The best call, not the median: on a shared machine the median measures the neighbours too, and a peak is a
    ceiling (the MLP's own figure stays a median).
    """
    import torch

    torch.set_num_threads(threads)
    best = 0.0
    for size in sizes:
        a, b = torch.randn(size, size), torch.randn(size, size)
        for _ in range(2):
            a @ b
        fastest = min(timed(lambda a=a, b=b: a @ b)[1] for _ in range(repeats))
        best = max(best, 2 * size**3 / fastest / 1e9)
    return best


def flops_per_row(model: TorchMLPClassifier) -> int:
    return sum(2 * layer.in_features * layer.out_features for layer in linear_layers(model.network_))


def measure(model: TorchMLPClassifier, X_test: np.ndarray, y_test: np.ndarray, p50: dict[int, float]) -> dict[str, Any]:
    return {
        "bytes": artifact_bytes(model),
        "params": parameter_counts(model)[0],
        "auc": float(roc_auc_score(y_test, model.predict_proba(X_test)[:, 1])),
        "p50": {batch: round(ms, 4) for batch, ms in p50.items()},
        "rows_per_s": max(BATCHES) / (p50[max(BATCHES)] / 1000.0),
    }


def goal(value: float, target: float, higher: bool = True) -> str:
    met = value >= target if higher else value <= target
    return "met" if met else "MISSED"


def run_width(
    width: int, data: dict[str, Any], timing: MeasureParams, finetune: int, peak: float, record: Recorder
) -> None:
    params, schema, seed = data["params"], data["schema"], data["seed"]
    hyperparameters = {**params.train.families["mlp"], "hidden_units": width}
    started = time.perf_counter()
    pipeline = build_pipeline("mlp", hyperparameters, schema, seed, device="cpu").fit(data["train"], data["y_train"])
    fit_seconds = time.perf_counter() - started
    mlp: TorchMLPClassifier = pipeline[-1]
    to_matrix = pipeline[:-1]
    X_train, X_test = (np.asarray(to_matrix.transform(data[s]), dtype=np.float32) for s in ("train", "test"))
    y_train, y_test = data["y_train"], data["y_test"]

    started = time.perf_counter()
    variants = {
        "fp32": mlp,
        "fp32_onnx": mlp.with_network(OnnxNetwork(export_network(mlp.network_, mlp.spec_.n_features)), mlp.spec_),
        "int8": quantize(mlp),
        "int8_onnx": quantize_onnx(mlp, X_train, seed),
        "structured50": structured_prune(mlp, X_train, y_train, 0.5, finetune),
        "distilled": distill(mlp, X_train, y_train, data["teacher_train"], params.compress.distill),
    }
    build_seconds = time.perf_counter() - started
    # the variants timed in turn, as the compress stage times them: timed one after another, a slow spell of a few
    # seconds slowed one variant's whole block (two runs of the same code put int8 over fp32 at 1.54x and 1.02x)
    timings = latency(variants, X_test, timing)
    p50 = {name: {int(batch): values["p50"] for batch, values in timings[name].items()} for name in variants}
    rows = {name: measure(model, X_test, y_test, p50[name]) for name, model in variants.items()}
    base, int8, half, student = rows["fp32"], rows["int8"], rows["structured50"], rows["distilled"]

    print(f"\n## MLP {mlp.spec_.hidden_sizes} on {X_train.shape[1]} features")
    print(f"fit {fit_seconds:.1f} s ({mlp.epochs_} epochs kept); compressed variants built in {build_seconds:.1f} s")
    header = (
        f"{'variant':<14}{'bytes':>9}{'params':>9}{'test AUC':>10}{'p50 b=1 ms':>12}{'p50 b=4096 ms':>15}{'rows/s':>12}"
    )
    print(header)
    print("-" * len(header))
    for name, row in rows.items():
        print(
            f"{name:<14}{row['bytes']:>9}{row['params']:>9}{row['auc']:>10.4f}{row['p50'][1]:>12.4f}"
            f"{row['p50'][4096]:>15.4f}{row['rows_per_s']:>12,.0f}"
        )

    twins = [
        {"variant": name, "bytes": rows[name]["bytes"], "latency_ms": timings[name]} for name in ("int8", "int8_onnx")
    ]
    excluded = other_int8_runtime(twins, str(max(BATCHES)), SelectParams().speed_confidence)  # the stage's rule
    faster = next(name for name in ("int8", "int8_onnx") if name not in excluded)
    int8 = rows[faster]
    size_ratio = base["bytes"] / int8["bytes"]
    int8_4096, int8_1 = base["p50"][4096] / int8["p50"][4096], base["p50"][1] / int8["p50"][1]
    same_runtime = rows["fp32_onnx"]["p50"][4096] / rows["int8_onnx"]["p50"][4096]
    torch_int8 = base["p50"][4096] / rows["int8"]["p50"][4096]
    auc_drop = base["auc"] - int8["auc"]
    print(
        f"\n1. int8 ({faster}, compress's pick of torch's {rows['int8']['p50'][4096]:.3f} ms and ONNX Runtime's "
        f"{rows['int8_onnx']['p50'][4096]:.3f} ms at batch 4096) vs fp32 (PyTorch): size ratio {size_ratio:.2f}x "
        f"(goal >= 3.5x: {goal(size_ratio, 3.5)}); latency ratio batch 4096 {int8_4096:.2f}x (goal >= 1.5x: "
        f"{goal(int8_4096, 1.5)}), batch 1 {int8_1:.2f}x"
    )
    print("   " + "; ".join(f"{name} not chosen: {reason}" for name, reason in excluded.items()))
    print(
        f"   test AUC {base['auc']:.4f} -> {int8['auc']:.4f} (drop {auc_drop:+.4f}; goal within 0.005: "
        f"{goal(abs(auc_drop), 0.005, higher=False)}); torch int8 alone {torch_int8:.2f}x; within ONNX Runtime, "
        f"int8 vs fp32 {same_runtime:.2f}x"
    )
    mlp_width = width
    record.figure(f"width_{mlp_width}", {"rows": rows, "faster_int8": faster, "fit_seconds": fit_seconds})
    record.goal(
        f"int8 ({faster}) vs fp32 PyTorch, p50 at batch 4096, width {mlp_width}",
        int8_4096,
        1.5,
        True,
        "the fp32 PyTorch MLP (the uncompressed model compress compares with)",
    )
    record.goal(
        f"int8 ({faster}) test ROC AUC drop, width {mlp_width}",
        abs(auc_drop),
        0.005,
        False,
        "the fp32 PyTorch MLP",
        unit="",
    )
    record.goal(
        f"int8 ONNX Runtime vs fp32 ONNX Runtime, p50 at batch 4096, width {mlp_width}",
        same_runtime,
        1.5,
        True,
        "the same network in fp32 on ONNX Runtime (what int8 adds beyond the runtime)",
    )
    record.goal(f"int8 ({faster}) size ratio, width {mlp_width}", size_ratio, 3.5, True, "the fp32 network file")

    half_4096, half_1 = base["p50"][4096] / half["p50"][4096], base["p50"][1] / half["p50"][1]
    drop = base["auc"] - half["auc"]
    print(
        f"2. structured pruning, half the hidden neurons {half['params']} vs {base['params']} params: latency ratio "
        f"batch 4096 {half_4096:.2f}x (goal >= 1.5x: {goal(half_4096, 1.5)}), batch 1 {half_1:.2f}x; "
        f"AUC drop {drop:+.4f} (goal <= 0.005: {goal(drop, 0.005, higher=False)})"
    )

    param_ratio = base["params"] / student["params"]
    teacher_auc = data["teacher_test_auc"]
    kept = (student["auc"] - 0.5) / (teacher_auc - 0.5)
    kept_mlp = (student["auc"] - 0.5) / (base["auc"] - 0.5)
    speed = student["rows_per_s"] / base["rows_per_s"]
    student_pipe = Pipeline([*to_matrix.steps, ("model", variants["distilled"])])
    end_to_end = _pipeline_rows_per_s(student_pipe, data["test"], timing) / data["teacher_rows_per_s"]
    print(
        f"3. distilled student {variants['distilled'].spec_.hidden_sizes}: parameter ratio {param_ratio:.1f}x "
        f"(goal >= 10x: {goal(param_ratio, 10)}); share of the teacher's (AUC - 0.5) kept {kept:.1%} "
        f"(teacher {data['teacher']}, test AUC {teacher_auc:.4f}; goal >= 97%: {goal(kept, 0.97)}), of the MLP's "
        f"{kept_mlp:.1%}; rows/s vs the MLP (network, batch 4096) {speed:.2f}x, vs the teacher pipeline "
        f"(raw rows, batch 4096, preprocessing included) {end_to_end:.2f}x"
    )
    achieved = base["rows_per_s"] * flops_per_row(mlp) / 1e9
    record.figure(f"width_{width}_peak_share", achieved / peak)
    print(
        f"4. MLP at batch 4096: {base['rows_per_s']:,.0f} rows/s x {flops_per_row(mlp):,} FLOP/row = "
        f"{achieved:.2f} GFLOP/s = {achieved / peak:.1%} of the measured matmul peak {peak:.1f} GFLOP/s"
    )


def _pipeline_rows_per_s(model: Any, rows: Any, timing: MeasureParams) -> float:
    import torch

    torch.set_num_threads(timing.threads)
    batch = rows.sample(n=max(BATCHES), replace=True, random_state=0)
    for _ in range(timing.warmup):
        model.predict_proba(batch)
    times = []
    for _ in range(max(5, timing.repeats // 3)):
        started = time.perf_counter()
        model.predict_proba(batch)
        times.append(time.perf_counter() - started)
    return len(batch) / float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--widths", type=int, nargs="+", help="hidden widths (default: params.yaml's and 256)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads while timing (default 1)")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--finetune-epochs", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    record = Recorder("compression", argv)
    started = time.perf_counter()

    config = load_config(args.params)
    params = config.params
    frame, _ = load_dataset(config.source, params.data)
    splits = split_dataset(frame, params.data, params.split, params.seed)
    schema = resolve_schema(splits.train, params.data)
    features = list(schema.features)
    data: dict[str, Any] = {
        "params": params,
        "schema": schema,
        "seed": params.seed,
        "train": splits.train[features],
        "test": splits.test[features],
        "y_train": labels(splits.train, params.data),
        "y_test": labels(splits.test, params.data),
    }
    timing = MeasureParams(batch_sizes=BATCHES, repeats=args.repeats, warmup=5, threads=args.threads)
    # The teacher: the best non-MLP family of params.yaml train.families by validation ROC AUC.
    y_valid = labels(splits.valid, params.data)
    teachers = {
        family: build_pipeline(family, dict(hp or {}), schema, params.seed).fit(data["train"], data["y_train"])
        for family, hp in params.train.families.items()
        if family != "mlp"
    }
    valid_auc = {f: roc_auc_score(y_valid, m.predict_proba(splits.valid[features])[:, 1]) for f, m in teachers.items()}
    best = max(valid_auc, key=lambda family: valid_auc[family])
    data.update(
        teacher=best,
        teacher_train=teachers[best].predict_proba(data["train"])[:, 1],
        teacher_test_auc=float(roc_auc_score(data["y_test"], teachers[best].predict_proba(data["test"])[:, 1])),
        teacher_rows_per_s=_pipeline_rows_per_s(teachers[best], data["test"], timing),
    )
    peak = matmul_peak_gflops(args.threads)
    widths = args.widths or [int(params.train.families["mlp"].get("hidden_units", 64)), 256]
    finetune = args.finetune_epochs or params.compress.finetune_epochs

    print("# Optiflow compression benchmark")
    print(
        f"data: {config.source.name}: train {len(data['train'])}, test {len(data['test'])} rows; torch threads "
        f"{args.threads}; p50 of {args.repeats} timed calls after 5 warm-up calls, the variants called in turn; "
        f"fine-tune <= {finetune} epochs"
    )
    print(f"distillation teacher: {best} (validation ROC AUC {valid_auc[best]:.4f}; candidates {valid_auc})")
    print(
        f"matmul probe: best of 512/1024/2048 square float32 matmuls, {peak:.1f} GFLOP/s with {args.threads} thread(s)"
    )
    record.figure("matmul_peak_gflops", peak)
    for width in widths:
        run_width(width, data, timing, finetune, peak, record)
    print(f"total bench time {time.perf_counter() - started:.0f} s; load average at end {os.getloadavg()[0]:.2f}")
    record.save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
