"""compress: prune, quantize and distill the trained MLP, measure every variant alike, and hand the one the policy
chooses to evaluate as a candidate (models/compressed/<family>_<variant>/); none passing keeps the uncompressed model.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline

from optiflow.assess.calibration import decision_threshold
from optiflow.assess.compression import EvalSplit, compress_model, report_rows, tradeoff_figures
from optiflow.config import Config
from optiflow.data.split import labels
from optiflow.errors import ConfigError
from optiflow.io import atomic_dir, read_parquet, write_json, write_text, write_with
from optiflow.modeling.candidates import candidate_folders, load_candidate, save_candidate
from optiflow.modeling.mlp import TorchMLPClassifier
from tasks.common import StageResult, publish_table, stage_logger, stage_task
from tasks.fanout import fan_out


@stage_task("compress")
def compress(config: Config) -> StageResult:
    params, settings, log = config.params, config.params.compress, stage_logger()
    folders = candidate_folders(config.path("candidates"))
    train, valid, test = (read_parquet(config.path(split)) for split in ("train", "valid", "test"))
    y_train, y_valid = labels(train, params.data), labels(valid, params.data)
    with atomic_dir(config.path("compressed")) as models, atomic_dir(config.path("compression_plots")) as plots:
        if settings.family not in folders:
            message = f"compress.family {settings.family!r} was not trained (train.families); nothing to compress"
            log.warning(message)
            write_json(models / "selection.json", {"chosen": None, "message": message})
            write_json(config.path("compression"), {"chosen": None, "fallback": True, "message": message})
            write_text(plots / "variants.csv", "variant\n")
            return {"stage": "compress", "chosen": None, "message": message}
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
            _teacher(settings.distill.teacher, folders, valid, y_valid, train)
            if settings.distill.enabled
            else (None, None)
        )
        # Variants are built as pieces on Dask processes; with threads they are built here one after another
        # (torch's seed is process-wide, so threads would only take turns). All are measured here.
        orchestration = params.orchestration
        builders = orchestration.dask_workers if orchestration.task_runner == "dask" else 1
        with fan_out(orchestration, builders) as build_pieces:
            result = compress_model(
                base[-1],
                matrix(train),
                y_train,
                splits,
                lambda scores: decision_threshold(y_valid, scores, params.evaluate),
                settings,
                teacher_proba,
                build_pieces,
            )
        chosen = result.chosen()
        payload = {**result.to_dict(), "family": settings.family, "teacher": teacher}
        if chosen is not None:
            name = f"{settings.family}_{chosen.name}"
            save_candidate(
                models / name,
                Pipeline([*preprocess.steps, ("model", chosen.model)]),
                {
                    **meta,
                    "family": settings.family,
                    "variant": chosen.name,
                    "technique": chosen.technique,
                    "compressed_from": folders[settings.family].name,
                },
            )
            payload["candidate"] = name
        write_json(models / "selection.json", {key: payload[key] for key in ("chosen", "fallback", "message")})
        table = pd.DataFrame(report_rows(result.rows, result.choice))
        buffer = io.StringIO()
        table.to_csv(buffer, index=False)
        write_text(plots / "variants.csv", buffer.getvalue())
        for figure_name, figure in tradeoff_figures(table).items():
            write_with(plots / f"{figure_name}.png", lambda tmp, f=figure: f.savefig(tmp, format="png", dpi=110))
        write_json(config.path("compression"), payload)
    publish_table("compression-variants", table.to_dict("records"), f"Compressed variants: {result.choice.message}")
    return {"stage": "compress", "chosen": result.choice.chosen, "message": result.choice.message}


def _teacher(
    wanted: str, folders: dict[str, Path], valid: pd.DataFrame, y_valid: np.ndarray, train: pd.DataFrame
) -> tuple[str, np.ndarray]:
    """The distillation teacher (`best`: highest validation ROC AUC of any family) and its probabilities on train."""
    if wanted != "best" and wanted not in folders:
        raise ConfigError(f"compress.distill.teacher {wanted!r} is not a trained family; trained: {sorted(folders)}")
    names = sorted(folders) if wanted == "best" else [wanted]
    models = {name: load_candidate(folders[name])[0] for name in names}
    scores = {name: roc_auc_score(y_valid, model.predict_proba(valid)[:, 1]) for name, model in models.items()}
    best = max(scores, key=lambda name: scores[name])
    stage_logger().info("distillation teacher: %s (validation ROC AUC %.4f)", best, scores[best])
    return best, models[best].predict_proba(train)[:, 1]
