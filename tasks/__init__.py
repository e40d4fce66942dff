"""Prefect tasks, one per stage; each a thin shell around the core in `optiflow`."""
