"""Writing params.yaml for `optiflow init`: data groups replaced, the rest and its comments kept, hand edits kept."""

from __future__ import annotations

import yaml

from optiflow.config.writing import hand_edited, new_file_groups, refuse_overwrite, render
from tests.conftest import REPO

UPDATES = {
    "data": {"source": "d.csv", "target": "y", "positive_label": 1, "negative_label": 0},
    "evaluate": {"slices": ["a"]},
}


def test_a_new_file_holds_every_group_a_stage_reads_and_its_stamp() -> None:
    text = render(None, UPDATES, new_file_groups(), {("data", "target"): "the label"}, "d.csv")
    written = yaml.safe_load(text)
    assert list(written)[:3] == ["seed", "data", "split"] and written["evaluate"]["slices"] == ["a"]
    assert written["train"]["families"]["logistic_regression"] == {"C": 1.0}
    assert "target: y  # the label" in text and not hand_edited(text)


def test_an_existing_file_keeps_its_other_groups_and_comments() -> None:
    shipped = (REPO / "params.yaml").read_text()
    text = render(shipped, UPDATES, new_file_groups(), {}, "d.csv")
    written = yaml.safe_load(text)
    assert written["data"] == UPDATES["data"]  # replaced as a whole: the old table's columns mean nothing here
    assert written["evaluate"]["slices"] == ["a"] and written["evaluate"]["threshold_policy"] == "max_f1"
    assert written["train"] == yaml.safe_load(shipped)["train"]
    assert "# Optuna search budget per family" in text  # a comment of a group init does not touch
    assert hand_edited(shipped) and not hand_edited(text)
    assert hand_edited(text.replace("slices: [a]", "slices: [b]"))


def test_the_refusal_shows_what_would_change() -> None:
    before = render(None, UPDATES, new_file_groups(), {}, "d.csv").replace("slices: [a]", "slices: [b]")
    after = render(before, UPDATES, new_file_groups(), {}, "d.csv")
    message = str(refuse_overwrite("params.yaml", before, after))
    assert "params.yaml was edited by hand" in message and "-  slices: [b]" in message and "+  slices: [a]" in message
