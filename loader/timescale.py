"""Which TimescaleDB setup a server has, and what ``init-db`` does about it.

Users run every variant: the Timescale License build (compression, policies, continuous
aggregates), the Apache-only build of Debian's and Ubuntu's packages (hypertables only),
the extension installed but not in ``shared_preload_libraries`` (``CREATE EXTENSION``
then fails with a FATAL that closes the session), a role that may not create it, or no
TimescaleDB at all. :func:`inspect` reads the server without changing it; :func:`decide`
(pure) turns what it found and ``--timescaledb auto|require|off`` into a :class:`Plan`
or a :class:`TimescaleSetupError` that says what to do. Nothing is attempted that the
inspection says would fail.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

import psycopg

from loader.errors import TimescaleSetupError

log = logging.getLogger(__name__)

EXTENSION = "timescaledb"
PRELOAD_LINE = "shared_preload_libraries = 'timescaledb'"


class Mode(StrEnum):
    """``--timescaledb``: use it when it is there, insist on it, or never use it."""

    AUTO = "auto"
    REQUIRE = "require"
    OFF = "off"


class Edition(StrEnum):
    """``timescaledb.license``; UNKNOWN when this role may not read it."""

    TIMESCALE = "timescale"
    APACHE = "apache"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class ServerFacts:
    """What the server says about TimescaleDB, read without changing anything."""

    available: bool  # listed in pg_available_extensions (files installed)
    installed: str | None  # extension version created in this database, if any
    preloaded: bool  # the library is loaded (in shared_preload_libraries)
    may_create: bool  # superuser, or CREATE on the database and a trusted extension
    edition: Edition = Edition.UNKNOWN
    version: str | None = None  # default_version of the available extension


@dataclass(frozen=True)
class Plan:
    """What init-db builds: hypertables at all, and whether compression may be tried."""

    timescaledb: bool
    compression: bool  # False: the edition has none; True: available or worth a try
    note: str  # one line for the log and the CLI


def decide(facts: ServerFacts, mode: Mode) -> Plan:
    """The setup for ``facts`` under ``mode``; TimescaleSetupError when it cannot be made."""
    if mode is Mode.OFF:
        return Plan(False, False, "--timescaledb off: plain PostgreSQL tables")
    if not facts.available and not facts.installed:
        if mode is Mode.REQUIRE:
            raise TimescaleSetupError(
                "--timescaledb require: the timescaledb extension is not installed on this "
                "server (it is not in pg_available_extensions); install TimescaleDB for this "
                "PostgreSQL version, or use --timescaledb auto/off for plain tables"
            )
        return Plan(
            False,
            False,
            "TimescaleDB is not installed on this server: plain PostgreSQL tables, "
            "no compression (install TimescaleDB and rerun init-db to convert them)",
        )
    if not facts.preloaded:
        raise TimescaleSetupError(
            "TimescaleDB is installed on this server but not loaded: add "
            f"`{PRELOAD_LINE}` to postgresql.conf (append to any existing list), restart "
            "PostgreSQL (a reload is not enough), and run init-db again; or run "
            "`loader init-db --timescaledb off` for plain PostgreSQL tables instead"
        )
    if not facts.installed and not facts.may_create:
        raise TimescaleSetupError(
            "TimescaleDB is available, but this role may not CREATE EXTENSION timescaledb "
            "in this database (it needs CREATE privilege on the database, or superuser): "
            "have a superuser run `CREATE EXTENSION timescaledb;` in this database once, "
            "or grant CREATE on it; or use --timescaledb off for plain PostgreSQL tables"
        )
    if facts.edition is Edition.APACHE:
        return Plan(
            True,
            False,
            "TimescaleDB (Apache-only edition): hypertables without compression; this "
            "edition has no compression or continuous aggregates, so trades take about 5x "
            "the disk of the Timescale License build and candles are a plain view",
        )
    return Plan(True, True, "TimescaleDB: hypertables with compression and continuous candles")


def inspect(conn: psycopg.Connection) -> ServerFacts:
    """Read the server's TimescaleDB facts (no DDL; the transaction is left clean)."""
    row = conn.execute(
        "SELECT default_version, installed_version FROM pg_available_extensions WHERE name = %s",
        (EXTENSION,),
    ).fetchone()
    installed_row = conn.execute(
        "SELECT extversion FROM pg_extension WHERE extname = %s", (EXTENSION,)
    ).fetchone()
    installed = installed_row[0] if installed_row else None
    may_create = _may_create(conn)
    preloaded = _preloaded(conn)
    edition = _edition(conn) if preloaded else Edition.UNKNOWN
    conn.rollback()
    return ServerFacts(
        available=row is not None,
        installed=installed,
        preloaded=preloaded,
        may_create=may_create,
        edition=edition,
        version=row[0] if row else None,
    )


def _preloaded(conn: psycopg.Connection) -> bool:
    # A preloaded library registers its settings in every backend at start; a role that
    # is not superuser cannot read shared_preload_libraries, but sees these rows.
    row = conn.execute(
        "SELECT count(*) FROM pg_settings WHERE name LIKE 'timescaledb.%'"
    ).fetchone()
    if row and row[0]:
        return True
    with conn.transaction():
        value = conn.execute(
            "SELECT CASE WHEN pg_has_role('pg_read_all_settings', 'MEMBER') OR"
            " (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)"
            " THEN current_setting('shared_preload_libraries') END"
        ).fetchone()
    listed = value[0] if value else None
    return bool(listed) and EXTENSION in [part.strip() for part in str(listed).split(",")]


def _may_create(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),"
        " has_database_privilege(current_database(), 'CREATE'),"
        " coalesce((SELECT bool_or(trusted) FROM pg_available_extension_versions"
        "           WHERE name = %s), false)",
        (EXTENSION,),
    ).fetchone()
    assert row is not None
    superuser, create, trusted = row
    return bool(superuser) or (bool(create) and bool(trusted))


def _edition(conn: psycopg.Connection) -> Edition:
    row = conn.execute("SELECT current_setting('timescaledb.license', true)").fetchone()
    value = (row[0] or "") if row else ""
    if value == "apache":
        return Edition.APACHE
    if value.startswith("timescale"):
        return Edition.TIMESCALE
    return Edition.UNKNOWN
