"""Connections: open one, say which database without its password, wait out outages.

A database that is down or restarting is not an error for the loader: callers wrap
their work in :func:`retrying`, which logs, backs off and tries again until the work
succeeds or a stop is requested. Only psycopg.OperationalError counts as an outage;
anything else is a real error and propagates.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

import psycopg
from psycopg import conninfo

from loader.errors import LoaderBusyError, SchemaError

log = logging.getLogger(__name__)

APPLICATION_NAME = "polymarket-loader"  # shows in pg_stat_activity
CONNECT_TIMEOUT_S = 10  # a dead host fails fast enough to back off and retry
RETRY_INITIAL_S = 0.5  # first wait after an outage; a restart takes about a second
RETRY_MAX_S = 30.0  # a long outage is still noticed within half a minute
# pg_try_advisory_lock key held by `loader run`: one run per database ("pmcl").
RUN_LOCK_KEY = 0x706D636C

T = TypeVar("T")


class Stopped(Exception):
    """A stop was requested while waiting for the database (not an error)."""


def redact(dsn: str | None) -> str:
    """``dsn`` without its password, for logs and messages."""
    if not dsn:
        return "(libpq defaults / PG* variables)"
    try:
        params = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(unparseable DSN)"
    if "password" in params:
        params["password"] = "***"
    return conninfo.make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})


def connect(dsn: str | None) -> psycopg.Connection:
    """A new connection (autocommit off). Raises psycopg.OperationalError when down."""
    return psycopg.connect(
        dsn or "", application_name=APPLICATION_NAME, connect_timeout=CONNECT_TIMEOUT_S
    )


def clean_message(exc: BaseException, dsn: str | None) -> str:
    """An error's text with any password of ``dsn`` blotted out."""
    text = str(exc).strip() or type(exc).__name__
    password = _password(dsn)
    return text.replace(password, "***") if password else text


def retrying(work: Callable[[], T], *, dsn: str | None, stop: threading.Event, what: str) -> T:
    """Run ``work`` until it gets through a database outage. Raises Stopped on stop."""
    delay = RETRY_INITIAL_S
    while True:
        if stop.is_set():
            raise Stopped()
        try:
            return work()
        except psycopg.OperationalError as exc:
            log.warning(
                "database unavailable while %s (%s): %s; retrying in %.1f s",
                what,
                redact(dsn),
                clean_message(exc, dsn),
                delay,
            )
        if stop.wait(delay):
            raise Stopped()
        delay = min(delay * 2, RETRY_MAX_S)


def take_run_lock(conn: psycopg.Connection) -> None:
    """Hold the session advisory lock that allows one ``loader run`` per database."""
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (RUN_LOCK_KEY,)).fetchone()
    conn.commit()
    if row is None or not row[0]:
        holder = conn.execute(
            "SELECT pid, application_name FROM pg_locks JOIN pg_stat_activity USING (pid)"
            " WHERE locktype = 'advisory' AND objid = %s AND granted",
            (RUN_LOCK_KEY,),
        ).fetchone()
        conn.commit()
        who = f"backend pid {holder[0]} ({holder[1]})" if holder else "another session"
        raise LoaderBusyError(
            f"another `loader run` already loads into this database ({who}); only one "
            "may run per database: stop the other one first"
        )


def require_schema(conn: psycopg.Connection) -> None:
    """SchemaError unless ``loader init-db`` has created the tables."""
    row = conn.execute("SELECT to_regclass('wal_segments') IS NOT NULL").fetchone()
    conn.commit()
    if row is None or not row[0]:
        raise SchemaError("the database has no loader schema: run `loader init-db` first")


def _password(dsn: str | None) -> str | None:
    if not dsn:
        return None
    try:
        value = conninfo.conninfo_to_dict(dsn).get("password")
    except psycopg.ProgrammingError:
        return None
    return str(value) if value else None
