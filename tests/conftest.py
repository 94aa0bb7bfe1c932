"""Shared fixtures. The throwaway PostgreSQL fixture lives here (section below)."""

# --- PostgreSQL fixture (owned by the loader work) ---
# A throwaway PostgreSQL for the whole session (scripts/pgserver.py), or the server of
# LOADER_TEST_DSN when set. `pg_server.dsn` is a superuser DSN; `fresh_db` gives each
# test its own empty database and drops it afterwards.

import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class PgServer:
    """A running PostgreSQL: ``dsn`` to connect; ``datadir`` when we own it (else None)."""

    dsn: str
    datadir: Path | None

    def dsn_for(self, dbname: str) -> str:
        from psycopg.conninfo import make_conninfo

        return make_conninfo(self.dsn, dbname=dbname)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    external = os.environ.get("LOADER_TEST_DSN")
    if external:
        yield PgServer(external, None)
        return
    from scripts import pgserver

    # Directly under /tmp: pytest's own tmp dirs are root-only, and the server may run
    # as the postgres user.
    datadir = Path(tempfile.mkdtemp(prefix="pgtest-"))
    try:
        dsn = pgserver.start(datadir)
    except pgserver.PgServerError as exc:
        pgserver.destroy(datadir)
        pytest.fail(f"cannot start a throwaway PostgreSQL for the tests: {exc}", pytrace=False)
    try:
        yield PgServer(dsn, datadir)
    finally:
        pgserver.destroy(datadir)


@pytest.fixture
def fresh_db(pg_server: PgServer) -> Iterator[str]:
    """The DSN of a new, empty database, dropped after the test."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield pg_server.dsn_for(name)
    finally:
        with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
