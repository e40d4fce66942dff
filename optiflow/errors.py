"""Errors a user can act on: each names what was wrong and where, and the CLI turns them into exit code 2."""

from __future__ import annotations

from collections.abc import Iterable


class OptiflowError(Exception):
    """Base class: an expected failure with a message written for the person running the pipeline."""


class ConfigError(OptiflowError):
    """params.yaml (or an override) is malformed or names something that does not exist."""


class DataError(OptiflowError):
    """An input file is missing, unreadable or does not match the declared schema."""


class ValidationFailed(OptiflowError):
    """The data broke one or more expectations of the validation suite."""


class IntegrityError(OptiflowError):
    """A file does not match the checksum recorded for it."""


class ServiceUnavailable(OptiflowError):
    """A backing service (the MLflow tracking store) cannot be reached or written; may pass on a retry."""


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate spelt most like ``name`` (or the same but for case), or None: every "did you mean" (settings
    keys, column names, commands) comes from here."""
    import difflib

    known = [str(candidate) for candidate in candidates]
    match = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if match:
        return match[0]
    return next((candidate for candidate in known if candidate.lower() == name.lower()), None)


class LineageError(OptiflowError):
    """A stage's input was made by another run for other inputs than this run's (the lineage record says so)."""
