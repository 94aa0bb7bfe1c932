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

from tests.timeouts import scaled


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


# --- TimescaleDB fixture (owned by the tsdb harness work) ---
# A TimescaleDB for the whole session: PGlite (PostgreSQL 17.5 in WASM with TimescaleDB
# 2.23) behind scripts/tsdb/server.mjs, started by scripts/tsdbserver.py. When
# LOADER_TEST_DSN names a server with timescaledb available and preloaded, that real
# server is used instead. `tsdb_db` is the DSN of a clean state for one test, with the
# timescaledb extension created: on PGlite (one database, one client at a time) every
# object of the previous test is dropped and the catalog checked empty; on a real server
# each test gets a fresh database, dropped afterwards.


CLEAN_CONNECT_TIMEOUT_S = 30  # the one-client server: wait out an earlier test's last close


@dataclass(frozen=True)
class TsdbServer:
    """A running TimescaleDB: ``dsn`` to connect; ``pglite`` False for a real server."""

    dsn: str
    pglite: bool

    def dsn_for(self, dbname: str) -> str:
        from psycopg.conninfo import make_conninfo

        return make_conninfo(self.dsn, dbname=dbname)


def _real_timescaledb(dsn: str) -> bool:
    """True when the server of ``dsn`` can create the timescaledb extension."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        available = conn.execute(
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"
        ).fetchone()
        preload = conn.execute("SELECT current_setting('shared_preload_libraries')").fetchone()
    return bool(available and available[0]) and "timescaledb" in str(preload and preload[0])


@pytest.fixture(scope="session")
def tsdb_server() -> Iterator[TsdbServer]:
    external = os.environ.get("LOADER_TEST_DSN")
    if external and _real_timescaledb(external):
        yield TsdbServer(external, pglite=False)
        return
    from scripts import tsdbserver

    datadir = Path(tempfile.mkdtemp(prefix="tsdbtest-"))
    try:
        dsn = tsdbserver.start(datadir, timeout_s=scaled(tsdbserver.BOOT_TIMEOUT_S))
    except tsdbserver.TsdbServerError as exc:
        tsdbserver.destroy(datadir)
        pytest.fail(f"cannot start the TimescaleDB test server: {exc}", pytrace=False)
    try:
        yield TsdbServer(dsn, pglite=True)
    finally:
        tsdbserver.destroy(datadir)


@pytest.fixture
def tsdb_db(tsdb_server: TsdbServer) -> Iterator[str]:
    """The DSN of a clean TimescaleDB state (extension created) for one test."""
    import psycopg

    if tsdb_server.pglite:
        from scripts import tsdbserver

        try:
            tsdbserver.clean(tsdb_server.dsn, connect_timeout_s=scaled(CLEAN_CONNECT_TIMEOUT_S))
        except tsdbserver.TsdbServerError as exc:
            pytest.fail(str(exc), pytrace=False)
        yield tsdb_server.dsn
        return
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(tsdb_server.dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        with psycopg.connect(tsdb_server.dsn_for(name), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        yield tsdb_server.dsn_for(name)
    finally:
        with psycopg.connect(tsdb_server.dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
