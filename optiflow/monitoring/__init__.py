"""Watching a released model: batches and their history, drift against the reference, the retraining decision."""
