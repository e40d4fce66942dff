"""Optiflow core: pure, typed functions with no Prefect; flows/ and tasks/ wire them into a pipeline."""
