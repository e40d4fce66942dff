"""The register stage reads the compress stage's timing report only when it belongs to the selection DVC restored:
a compress stage taken from DVC's run cache wrote none (or an older run's is lying there)."""

from __future__ import annotations

from pathlib import Path

from optiflow.config import load_config
from optiflow.io import write_json
from tasks.register import compression_report
from tests.conftest import make_project

SELECTION = {"chosen": "distilled", "fallback": False, "message": "distilled chosen: lowest artifact bytes"}


def test_the_report_of_the_restored_selection_or_the_selection_saying_why(tmp_path: Path) -> None:
    config = load_config(make_project(tmp_path))
    write_json(config.path("compressed") / "selection.json", SELECTION)
    restored = compression_report(config)  # nothing written: the stage came from the run cache
    assert restored["chosen"] == "distilled" and "variants" not in restored
    assert restored["message"].startswith(SELECTION["message"]) and "run cache" in restored["message"]
    report = {**SELECTION, "variants": {"distilled": {}}, "judgements": {}}
    write_json(config.path("compression"), report)
    assert compression_report(config) == report
    write_json(config.path("compression"), {**report, "chosen": "int8", "message": "int8 chosen"})  # an older run's
    assert "run cache" in compression_report(config)["message"]
