"""Prefect flows and the `optiflow` command line: wiring only."""
