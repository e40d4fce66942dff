"""compress: prune, quantize and distill the trained MLP, measure every variant alike, and hand the one the policy
chooses to evaluate as a candidate (models/compressed/<family>_<variant>/); none passing keeps the uncompressed model.
"""

from __future__ import annotations

import io

from optiflow.assess.compression import compress_candidate
from optiflow.config import Config
from optiflow.io import atomic_dir, read_parquet, write_json, write_text, write_with
from optiflow.modeling.candidates import candidate_folders, save_candidate
from tasks.common import StageResult, publish_table, stage_task
from tasks.fanout import fan_out


@stage_task("compress")
def compress(config: Config) -> StageResult:
    params, orchestration = config.params, config.params.orchestration
    folders = candidate_folders(config.path("candidates"))
    train, valid, test = (read_parquet(config.path(split)) for split in ("train", "valid", "test"))
    # Variants are built as pieces on Dask processes; with threads they are built here one after another
    # (torch's seed is process-wide, so threads would only take turns). All are measured here.
    builders = orchestration.dask_workers if orchestration.task_runner == "dask" else 1
    with fan_out(orchestration, builders) as build_pieces:
        outcome = compress_candidate(folders, train, valid, test, params, build_pieces)
    with atomic_dir(config.path("compressed")) as models, atomic_dir(config.path("compression_plots")) as plots:
        if outcome.candidate is not None:
            save_candidate(models / outcome.candidate.name, outcome.candidate.model, outcome.candidate.meta)
        write_json(models / "selection.json", outcome.selection)
        buffer = io.StringIO()
        outcome.table.to_csv(buffer, index=False)
        write_text(plots / "variants.csv", buffer.getvalue())
        for name, figure in outcome.figures.items():
            write_with(plots / f"{name}.png", lambda tmp, f=figure: f.savefig(tmp, format="png", dpi=110))
        write_json(config.path("compression"), outcome.report)
    if len(outcome.table):
        publish_table(
            "compression-variants", outcome.table.to_dict("records"), f"Compressed variants: {outcome.message}"
        )
    return {"stage": "compress", "chosen": outcome.chosen, "message": outcome.message}
