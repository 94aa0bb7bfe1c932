"""Connections: open one, say which database without its password, and tell outages
from real errors.

:func:`classify` sorts a database error by what it is (its SQLSTATE, not its psycopg
class: psycopg raises OperationalError subclasses for serialization failures and for
TimescaleDB's decompression limit too):

- ``OUTAGE``: the server is away, restarting or full of connections (class 08,
  57P01-57P03, 53300, or a connection failure with no SQLSTATE). Waited out for ever
  (or up to a deadline), with backoff and a log line naming the cause.
- ``DISK_FULL``: 53100 on the server. Waited out like an outage; the log says so.
- ``CONFLICT``: serialization failure or deadlock (40001, 40P01, a row moved to another
  partition). Retried a bounded number of times.
- ``PERMANENT``: everything else. Raised at once: retrying cannot help.

:func:`retrying` runs work under that policy. The lead's ``init-db`` and every loader
command use the same two functions.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg
from psycopg import conninfo

from loader.errors import DatabaseUnavailableError, LoaderBusyError, SchemaError

log = logging.getLogger(__name__)

APPLICATION_NAME = "polymarket-loader"  # shows in pg_stat_activity
CONNECT_TIMEOUT_S = 10  # a dead host fails fast enough to back off and retry
MIN_CONNECT_TIMEOUT_S = 2  # libpq treats anything lower as 2 s anyway
RETRY_INITIAL_S = 0.5  # first wait after an outage; a restart takes about a second
RETRY_MAX_S = 30.0  # a long outage is still noticed within half a minute
CONFLICT_RETRIES = 5  # a conflict that repeats this often is no passing race
CONFLICT_DELAY_S = 0.2  # a conflicting transaction usually ends within this
# pg_try_advisory_lock key held by `loader run`: one run per database ("pmcl").
RUN_LOCK_KEY = 0x706D636C

# SQLSTATEs (PostgreSQL, appendix A) that mean the server is away, not that we erred.
_OUTAGE_STATES = frozenset({"57P01", "57P02", "57P03", "53300"})
_OUTAGE_CLASSES = ("08",)  # connection exception
_DISK_FULL = "53100"
_CONFLICT_STATES = frozenset({"40001", "40P01"})
# TimescaleDB/PostgreSQL text for a row a concurrent job moved to another partition.
_MOVED_TEXT = "already moved to another partition"

T = TypeVar("T")


class Kind(enum.Enum):
    """What a database error is, hence whether and how often to retry it."""

    OUTAGE = "outage"
    DISK_FULL = "disk full"
    CONFLICT = "conflict"
    PERMANENT = "permanent"


class Stopped(Exception):
    """A stop was requested while waiting for the database (not an error)."""


class Transient(Exception):
    """A condition that clears by itself (e.g. our old session still holds the run lock);
    retried like an outage."""


def classify(exc: BaseException) -> Kind:
    """What ``exc`` is: see the module docstring."""
    if isinstance(exc, Transient):
        return Kind.OUTAGE
    if not isinstance(exc, psycopg.Error):
        return Kind.PERMANENT
    state = exc.sqlstate
    if state is None:
        # No SQLSTATE: the client's verdict. OperationalError here is a connection that
        # failed or was lost (refused, closed by the server, timed out).
        return Kind.OUTAGE if isinstance(exc, psycopg.OperationalError) else Kind.PERMANENT
    if state in _OUTAGE_STATES or state.startswith(_OUTAGE_CLASSES):
        return Kind.OUTAGE
    if state == _DISK_FULL:
        return Kind.DISK_FULL
    if state in _CONFLICT_STATES or _MOVED_TEXT in str(exc):
        return Kind.CONFLICT
    return Kind.PERMANENT


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


def connect(dsn: str | None, *, timeout_s: float | None = None) -> psycopg.Connection:
    """A new connection (autocommit off). Raises psycopg.OperationalError when down.

    ``timeout_s`` shortens the connect timeout (for a caller with a deadline).
    """
    timeout = CONNECT_TIMEOUT_S
    if timeout_s is not None:
        timeout = max(MIN_CONNECT_TIMEOUT_S, min(timeout, math.ceil(timeout_s)))
    return psycopg.connect(dsn or "", application_name=APPLICATION_NAME, connect_timeout=timeout)


def clean_message(exc: BaseException, dsn: str | None) -> str:
    """An error's text with any password of ``dsn`` blotted out."""
    text = str(exc).strip() or type(exc).__name__
    password = _password(dsn)
    return text.replace(password, "***") if password else text


def describe(exc: BaseException, dsn: str | None) -> str:
    """``exc`` for a message: its SQLSTATE (when it has one) and its clean text."""
    state = getattr(exc, "sqlstate", None)
    text = clean_message(exc, dsn).splitlines()[0]
    return f"{text} (SQLSTATE {state})" if state else text


def retrying(
    work: Callable[[], T],
    *,
    dsn: str | None,
    stop: threading.Event,
    what: str,
    max_wait_s: float | None = None,
    on_error: Callable[[BaseException], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Run ``work``, waiting out outages and retrying conflicts a few times.

    A PERMANENT error, or a conflict for the ``CONFLICT_RETRIES``-th time, propagates.
    An outage is retried until it ends, a stop (Stopped) or, with ``max_wait_s``, until it
    has lasted that long (DatabaseUnavailableError). ``on_error`` sees every error
    first (e.g. to drop a broken connection).
    """
    delay, conflicts, outage_since = RETRY_INITIAL_S, 0, None
    while True:
        if stop.is_set():
            raise Stopped()
        try:
            return work()
        except Exception as exc:
            if on_error is not None:
                on_error(exc)
            kind = classify(exc)
            if kind is Kind.PERMANENT:
                raise
            if kind is Kind.CONFLICT:
                conflicts += 1
                if conflicts >= CONFLICT_RETRIES:
                    raise
                log.warning(
                    "database conflict while %s (try %d of %d): %s; retrying",
                    what,
                    conflicts,
                    CONFLICT_RETRIES,
                    describe(exc, dsn),
                )
                wait = CONFLICT_DELAY_S * conflicts
            else:
                outage_since = clock() if outage_since is None else outage_since
                waited = clock() - outage_since
                if max_wait_s is not None and waited + delay > max_wait_s:
                    if waited < max_wait_s:
                        delay = max_wait_s - waited  # one last try at the deadline
                    else:
                        raise DatabaseUnavailableError(
                            f"the database {redact(dsn)} stayed unavailable for "
                            f"{max_wait_s:g} s (--max-wait) while {what}: "
                            f"{describe(exc, dsn)}"
                        ) from None
                _log_outage(kind, exc, dsn, what, delay)
                wait = delay
                delay = min(delay * 2, RETRY_MAX_S)
        if stop.wait(wait):
            raise Stopped()


def _log_outage(kind: Kind, exc: BaseException, dsn: str | None, what: str, delay: float) -> None:
    if kind is Kind.DISK_FULL:
        log.warning(
            "the database server's disk is full while %s (%s): %s; waiting for space, "
            "retrying in %.1f s",
            what,
            redact(dsn),
            describe(exc, dsn),
            delay,
        )
    else:
        log.warning(
            "database unavailable while %s (%s): %s; retrying in %.1f s",
            what,
            redact(dsn),
            describe(exc, dsn),
            delay,
        )


def take_run_lock(conn: psycopg.Connection) -> None:
    """Hold the session advisory lock that allows one ``loader run`` per database.

    LoaderBusyError (with ``holder_pid``, None when unknown) when another session has it.
    """
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
            "may run per database: stop the other one first",
            holder_pid=holder[0] if holder else None,
        )


def require_schema(conn: psycopg.Connection) -> None:
    """SchemaError unless ``loader init-db`` has created the tables, up to this version."""
    from loader.schema import LATEST_VERSION  # schema imports nothing of this module

    row = conn.execute(
        "SELECT to_regclass('wal_segments') IS NOT NULL, to_regclass('schema_version')"
    ).fetchone()
    conn.commit()
    if row is None or not row[0]:
        raise SchemaError("the database has no loader schema: run `loader init-db` first")
    version = 0
    if row[1] is not None:
        got = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
        conn.commit()
        version = int(got[0]) if got else 0
    if version < LATEST_VERSION:
        raise SchemaError(
            f"the database schema is version {version}, older than this loader's "
            f"{LATEST_VERSION}: run `loader init-db` to migrate it"
        )


def _password(dsn: str | None) -> str | None:
    if not dsn:
        return None
    try:
        value = conninfo.conninfo_to_dict(dsn).get("password")
    except psycopg.ProgrammingError:
        return None
    return str(value) if value else None
