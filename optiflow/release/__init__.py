"""Releasing a model: MLflow tracking and registry, the model card and run report, the served model class."""
