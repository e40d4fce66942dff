"""Judging a model: metrics, calibration and thresholds, groups and fairness, explanations, robustness, gates."""
