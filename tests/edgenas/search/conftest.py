"""A real PostgreSQL server for the shared-study tests, started once per session."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.edgenas.search.postgres import Postgres, PostgresMissing, start_postgres


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """Debian's PostgreSQL on 127.0.0.1, a throwaway cluster in a temporary folder."""
    try:
        server = start_postgres()
    except PostgresMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres: Postgres, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database of the session's server, named after the test."""
    name = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:50]
    return postgres.create_database(f"{name}_{id(request) % 10**6}")
