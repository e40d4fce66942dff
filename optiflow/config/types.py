"""Small value types the settings schema is written in: labels, metric names, search-space choices."""

from __future__ import annotations

from typing import Literal

Label = str | int | bool


PrimaryMetric = Literal["roc_auc", "pr_auc", "f1", "accuracy", "neg_log_loss", "neg_brier"]


# Metrics where lower is better are stored negated, so "higher is better" holds for every key.
HIGHER_IS_BETTER = ("roc_auc", "pr_auc", "f1", "accuracy", "neg_log_loss", "neg_brier")


Choice = str | bool | int | float | None


# What runs a registered model when it scores: auto = its parity-checked ONNX graph when it has one, else the Python
# model; onnx = the graph or an error; python = always the Python model.
Runtime = Literal["auto", "onnx", "python"]
