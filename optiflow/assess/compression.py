"""Judging compressed variants: every variant measured the same way, in one process, on the same rows (size,
parameters, latency, quality, per-group ROC AUC and TPR, label flips), then a fairness-aware choice on the validation
split. Compression tends to hurt under-represented groups more than the average (Hooker et al., 2020): the policy
bounds every group's ROC AUC drop, not just the overall one, and keeps each rejected variant with its reason.
`compress_candidate` runs all of it on a trained candidate, as the compress stage does.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from optiflow.assess.calibration import decision_threshold
from optiflow.assess.groups import group_labels, per_group
from optiflow.data.split import labels
from optiflow.errors import ConfigError
from optiflow.io import finite_or_none
from optiflow.modeling.candidates import load_candidate
from optiflow.modeling.compression import ONNX_SUFFIX, Variant, build_variants, parameter_counts, sparsity
from optiflow.modeling.mlp import TorchMLPClassifier, save_network
from optiflow.parallel import FanOut, run_serially
from optiflow.timing import Speedup, rotated_seconds, speedup

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from optiflow.config import CompressParams, MeasureParams, Params, SelectParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalSplit:
    """Rows a variant is judged on: the preprocessed matrix, the 0/1 labels and the sensitive columns."""

    matrix: np.ndarray
    y: np.ndarray
    sensitive: pd.DataFrame


def measure_variant(
    variant: Variant,
    latency_ms: dict[str, dict[str, Any]],
    splits: Mapping[str, EvalSplit],
    threshold_of: Callable[[np.ndarray], float],
    reference: Mapping[str, np.ndarray] | None,
    min_group_size: int,
) -> dict[str, Any]:
    """Size, parameters, latency (timed with the other variants: `latency`) and throughput, then quality and group
    metrics on each split.

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
        "runtime": "onnxruntime" if model.spec_.quantization == "onnx_int8" else "torch",
        "latency_ms": latency_ms,
    }
    largest = max(latency_ms, key=int)
    row["rows_per_s"] = round(int(largest) / (row["latency_ms"][largest]["p50"] / 1000.0), 1)
    threshold = threshold_of(model.predict_proba(splits["valid"].matrix)[:, 1])
    row["threshold"] = threshold
    for split, rows in splits.items():
        scores = model.predict_proba(rows.matrix)[:, 1]
        row[split] = quality(rows, scores, threshold, None if reference is None else reference[split], min_group_size)
    return row


def artifact_bytes(model: TorchMLPClassifier) -> int:
    """Bytes of the network file (network.pt or network.onnx) + network.json as saved for deployment (the
    preprocessing is the same for all)."""
    with tempfile.TemporaryDirectory() as folder:
        return sum((Path(folder) / name).stat().st_size for name in save_network(model, Path(folder)))


def latency(
    models: Mapping[str, TorchMLPClassifier], matrix: np.ndarray, settings: MeasureParams
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per variant and batch size: predict_proba milliseconds of every timed round and their p50 / p95, the variants
    called in turn (rotated_seconds) on a fixed thread count, so that round i pairs across variants (speedup)."""
    result: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in models}
    for batch in settings.batch_sizes:
        rows = np.resize(matrix, (batch, matrix.shape[1])).astype(np.float32)
        seconds = rotated_seconds(
            {name: lambda model=model, rows=rows: model.predict_proba(rows) for name, model in models.items()},
            repeats=settings.repeats,
            warmup=settings.warmup,
            threads=settings.threads,
        )
        for name, values in seconds.items():
            times = 1000.0 * values
            result[name][str(batch)] = {
                "p50": round(float(np.percentile(times, 50)), 4),
                "p95": round(float(np.percentile(times, 95)), 4),
                "rounds": [round(float(value), 5) for value in times],
            }
    return result


def quality(
    rows: EvalSplit, scores: np.ndarray, threshold: float, reference: np.ndarray | None, min_group_size: int
) -> dict[str, Any]:
    """ROC AUC overall and AUC / TPR / size per group of each sensitive feature (optiflow.assess.groups), plus label
    flips against the reference labels overall and per group."""
    from sklearn.metrics import roc_auc_score

    labels = (scores >= threshold).astype(int)
    flips = np.zeros(len(labels), dtype=int) if reference is None else (labels != reference).astype(int)
    result: dict[str, Any] = {
        "roc_auc": round(float(roc_auc_score(rows.y, scores)), 6),
        "flips": int(flips.sum()),
        "flip_share": round(float(flips.mean()), 6),
        "groups": {},
    }
    for column in rows.sensitive.columns:
        groups = group_labels(rows.sensitive, [column])
        table = per_group(rows.y, labels, groups, scores)
        flipped = pd.Series(flips).groupby(groups.to_numpy()).sum()
        result["groups"][column] = {
            group: {
                "rows": int(values["count"]),
                "judged": int(values["count"]) >= min_group_size,
                "roc_auc": _rounded(values["roc_auc"]),
                "tpr": _rounded(values["tpr"]),
                "flips": int(flipped.get(group, 0)),
                "flip_share": round(float(flipped.get(group, 0)) / max(int(values["count"]), 1), 6),
            }
            for group, values in table.iterrows()
        }
    return result


def _rounded(value: float) -> float | None:
    finite = finite_or_none(value)
    return None if finite is None else round(finite, 6)


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
class VariantChoice:
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
                worst, worst_group = drop, group
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


def row_speedup(row: Mapping[str, Any], baseline: Mapping[str, Any], batch: str, confidence: float) -> Speedup:
    """How many times faster `row`'s variant ran than `baseline`'s at `batch` rows, over their paired timed rounds."""
    return speedup(
        np.asarray(row["latency_ms"][batch]["rounds"]), np.asarray(baseline["latency_ms"][batch]["rounds"]), confidence
    )


def other_int8_runtime(rows: Sequence[Mapping[str, Any]], batch: str, confidence: float) -> dict[str, str]:
    """Of each int8 variant and its ONNX Runtime twin (``<name>_onnx``), the one that cannot be chosen, with the
    reason: the same network quantized twice is one choice, made by speed at ``batch`` rows where the paired timing
    tells the two apart (the interval clears 1x), else by artifact size (timing noise decides nothing)."""
    by_name = {row["variant"]: row for row in rows}
    excluded = {}
    for name, row in by_name.items():
        twin = by_name.get(name + ONNX_SUFFIX)
        if twin is None:
            continue
        gain = row_speedup(twin, row, batch, confidence)
        if gain.shown:
            winner, loser = (twin, row) if gain.shown > 0 else (row, twin)
            gain = gain if gain.shown > 0 else gain.inverse()
            reason = f"slower int8 runtime than {winner['variant']} ({winner['variant']} {gain} at batch {batch})"
        else:
            winner, loser = sorted((row, twin), key=lambda r: r["bytes"])
            reason = (
                f"int8 runtime no faster than {winner['variant']} beyond noise ({twin['variant']} {gain} at batch "
                f"{batch}) and larger ({loser['bytes']} vs {winner['bytes']} bytes)"
            )
        excluded[loser["variant"]] = reason
    return excluded


def fastest_within_noise(
    passing: Sequence[Mapping[str, Any]], batch: str, confidence: float
) -> tuple[Mapping[str, Any], str | None]:
    """The smallest of the variants not shown slower than the lowest-p50 one at `batch` rows (paired rounds), and
    why when it is not that one: a p50 lower by timing noise alone does not outweigh fewer bytes."""
    fastest = min(passing, key=lambda row: row["latency_ms"][batch]["p50"])
    tied = [row for row in passing if row_speedup(row, fastest, batch, confidence).shown >= 0]
    best = min(tied, key=lambda row: (row["bytes"], row["latency_ms"][batch]["p50"]))
    if best is fastest:
        return best, None
    gain = row_speedup(best, fastest, batch, confidence)
    return best, (
        f"as fast as {fastest['variant']} within noise ({gain} at batch {batch}) and smaller "
        f"({best['bytes']} vs {fastest['bytes']} bytes)"
    )


def select_variant(rows: Sequence[Mapping[str, Any]], policy: SelectParams, split: str = "valid") -> VariantChoice:
    """The passing compressed variant that minimises the objective; none passing falls back to the uncompressed
    model with a message naming each variant's reason. The uncompressed row (first) is the baseline, not a choice;
    of two int8 runtimes of one network only one may be chosen (other_int8_runtime). Latencies are compared over
    paired rounds with an interval at `policy.speed_confidence`, never by raw p50s."""
    base, *candidates = rows
    largest = max(base["latency_ms"], key=int)
    excluded = other_int8_runtime(candidates, largest, policy.speed_confidence)
    judgements = tuple(
        replace(verdict, passed=False, reasons=(*verdict.reasons, excluded[row["variant"]]))
        if row["variant"] in excluded
        else verdict
        for row, verdict in ((row, judge(row, base, policy, split)) for row in candidates)
    )
    passing = [row for row, verdict in zip(candidates, judgements, strict=True) if verdict.passed]
    if policy.objective == "latency":
        objective, key = f"p50 latency at batch {largest}", lambda row: row["latency_ms"][largest]["p50"]
    else:
        objective, key = "artifact bytes", lambda row: row["bytes"]
    if not passing:
        reasons = "; ".join(f"{j.variant}: {', '.join(j.reasons)}" for j in judgements) or "no variants were built"
        return VariantChoice(
            None,
            objective,
            judgements,
            f"no compressed variant meets the policy on the {split} split; keeping the uncompressed model ({reasons})",
            fallback=True,
        )
    if policy.objective == "latency":
        best, why = fastest_within_noise(passing, largest, policy.speed_confidence)
    else:
        best, why = min(passing, key=key), None
    figures = f"{key(best):g} vs {key(base):g} uncompressed"
    return VariantChoice(
        best["variant"],
        objective,
        judgements,
        f"{best['variant']} chosen: "
        + (f"lowest {objective} ({figures})" if why is None else f"{why}; {objective} {figures};")
        + f" among {len(passing)} of {len(candidates)} variants meeting the policy on the {split} split",
    )


@dataclass(frozen=True)
class CompressionResult:
    variants: tuple[Variant, ...]
    rows: tuple[dict[str, Any], ...]
    choice: VariantChoice

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

    `splits` must hold "valid" (the policy judges there; latency is timed on its rows, as it decides too) and "test"
    (reported only).
    """
    variants = build_variants(model, X_train, y_train, settings, teacher_proba, fan_out)
    latencies = latency({variant.name: variant.model for variant in variants}, splits["valid"].matrix, settings.measure)
    rows: list[dict[str, Any]] = []
    reference: dict[str, np.ndarray] | None = None
    for variant in variants:
        row = measure_variant(
            variant, latencies[variant.name], splits, threshold_of, reference, settings.select.min_group_size
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


@dataclass(frozen=True, eq=False)
class CompressedCandidate:
    """The chosen variant as a candidate evaluate scores: the base's preprocessing with the compressed network."""

    name: str  # <family>_<variant>, its folder under paths.compressed
    model: Pipeline
    meta: dict[str, Any]


@dataclass(frozen=True, eq=False)
class CompressionOutcome:
    """The compress stage's outcome: the report, the selection record, the variants table and figures, and the
    chosen candidate (None when no variant meets the policy, or the family was not trained)."""

    report: dict[str, Any]  # reports/compression.json
    selection: dict[str, Any]  # models/compressed/selection.json
    table: pd.DataFrame  # one row per variant (variants.csv, the Prefect table); no rows when nothing was compressed
    figures: dict[str, Figure]
    candidate: CompressedCandidate | None

    @property
    def chosen(self) -> str | None:
        return self.report["chosen"]

    @property
    def message(self) -> str:
        return self.report["message"]


def compress_candidate(
    folders: Mapping[str, Path],
    train: pd.DataFrame,
    valid: pd.DataFrame,
    test: pd.DataFrame,
    params: Params,
    fan_out: FanOut = run_serially,
) -> CompressionOutcome:
    """Compress compress.family's candidate (a PyTorch family), measure every variant alike on the preprocessed
    splits, and choose one by the policy; variants are built through `fan_out`. An untrained family is a warning
    and an empty outcome, a family that is not PyTorch a ConfigError."""
    settings = params.compress
    if settings.family not in folders:
        message = f"compress.family {settings.family!r} was not trained (train.families); nothing to compress"
        log.info(message)
        report = {"chosen": None, "fallback": True, "message": message}
        return CompressionOutcome(
            report, {"chosen": None, "message": message}, pd.DataFrame(columns=["variant"]), {}, None
        )
    y_train, y_valid = labels(train, params.data), labels(valid, params.data)
    base, meta = load_candidate(folders[settings.family])
    if not isinstance(base[-1], TorchMLPClassifier):
        raise ConfigError(f"compress.family {settings.family!r} is not a PyTorch family; compress an 'mlp'")
    preprocess = base[:-1]

    def matrix(frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(preprocess.transform(frame), dtype=np.float32)

    sensitive = list(params.data.sensitive_features)
    splits = {
        name: EvalSplit(matrix(frame), labels(frame, params.data), frame[sensitive].reset_index(drop=True))
        for name, frame in (("valid", valid), ("test", test))
    }
    teacher, teacher_proba = (
        distillation_teacher(settings.distill.teacher, folders, valid, y_valid, train)
        if settings.distill.enabled
        else (None, None)
    )
    result = compress_model(
        base[-1],
        matrix(train),
        y_train,
        splits,
        lambda scores: decision_threshold(y_valid, scores, params.evaluate),
        settings,
        teacher_proba,
        fan_out,
    )
    chosen = result.chosen()
    report = {**result.to_dict(), "family": settings.family, "teacher": teacher}
    candidate = None
    if chosen is not None:
        candidate = CompressedCandidate(
            f"{settings.family}_{chosen.name}",
            Pipeline([*preprocess.steps, ("model", chosen.model)]),
            {
                **meta,
                "family": settings.family,
                "variant": chosen.name,
                "technique": chosen.technique,
                "compressed_from": folders[settings.family].name,
            },
        )
        report["candidate"] = candidate.name
    table = pd.DataFrame(report_rows(result.rows, result.choice))
    selection = {key: report[key] for key in ("chosen", "fallback", "message")}
    return CompressionOutcome(report, selection, table, tradeoff_figures(table), candidate)


def distillation_teacher(
    wanted: str, folders: Mapping[str, Path], valid: pd.DataFrame, y_valid: np.ndarray, train: pd.DataFrame
) -> tuple[str, np.ndarray]:
    """The distillation teacher (`best`: highest validation ROC AUC of any family) and its probabilities on train."""
    from sklearn.metrics import roc_auc_score

    if wanted != "best" and wanted not in folders:
        raise ConfigError(f"compress.distill.teacher {wanted!r} is not a trained family; trained: {sorted(folders)}")
    names = sorted(folders) if wanted == "best" else [wanted]
    models = {name: load_candidate(folders[name])[0] for name in names}
    scores = {name: roc_auc_score(y_valid, model.predict_proba(valid)[:, 1]) for name, model in models.items()}
    best = max(scores, key=lambda name: scores[name])
    log.info("distillation teacher: %s (validation ROC AUC %.4f)", best, scores[best])
    return best, models[best].predict_proba(train)[:, 1]


def report_rows(rows: Sequence[Mapping[str, Any]], choice: VariantChoice) -> list[dict[str, Any]]:
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
                "runtime": row["runtime"],
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
