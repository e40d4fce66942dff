"""Integration level: real services on 127.0.0.1 (a Prefect API, MLflow, DVC, PostgreSQL), started the way users do."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory):
    """One temporary Prefect API for the flow tests that ask for it (starting it costs ~15 s; each flow then ~1 s).

    Task results (the stage cache) go to a fresh folder per session: Prefect reads PREFECT_HOME once at import, so
    without this a second session would find the first one's cache records under the same inputs.
    """
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    storage = tmp_path_factory.mktemp("prefect-results")
    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: storage}), prefect_test_harness(server_startup_timeout=90):
        yield
