"""The database schema: versioned migrations, with TimescaleDB when it is there.

``init_db`` is idempotent: it applies the migrations the ``schema_version`` table does
not list yet, each in its own transaction, then (re)sets the compression policy when
TimescaleDB is present. Without TimescaleDB ``trades`` is a plain table with the
indexes that keep ``(token_id, ts)`` queries and per-segment deletes fast.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import psycopg
from psycopg import sql

from loader.errors import SchemaError

log = logging.getLogger(__name__)

DEFAULT_COMPRESS_AFTER = timedelta(days=7)  # a week of trades stays fast to reparse
CHUNK_INTERVAL = timedelta(days=1)  # ~1 day of trades per chunk keeps chunks modest

_SCHEMA_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version    integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now(),
    timescaledb boolean NOT NULL
)"""

_V1_SEGMENTS = """
CREATE TABLE wal_segments (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text NOT NULL UNIQUE,
    status         text NOT NULL DEFAULT 'loading'
                   CHECK (status IN ('loading', 'loaded', 'corrupt')),
    offset_bytes   bigint NOT NULL DEFAULT 0,  -- byte offset of the next zstd frame to load
    records        bigint NOT NULL DEFAULT 0,
    frames         bigint NOT NULL DEFAULT 0,
    trades         bigint NOT NULL DEFAULT 0,
    parse_errors   bigint NOT NULL DEFAULT 0,
    first_event_at timestamptz,                -- min(trades.ts) of this segment's rows
    last_event_at  timestamptz,                -- max(trades.ts): bounds reparse's DELETE
    parser_version integer NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    loaded_at      timestamptz,
    error          text,                       -- why the segment is corrupt
    error_offset   bigint                      -- byte offset of the damage
)"""

# fee_rate_bps is numeric: the feed sends it as a decimal string ("0", "1.5") and numeric
# keeps it exactly as sent, with no binary-float rounding, at a size cost that does not
# matter for one small column; text would push parsing onto every query.
_V1_TRADES = """
CREATE TABLE trades (
    ts               timestamptz NOT NULL,
    token_id         text NOT NULL,
    side             text NOT NULL CHECK (side IN ('BUY', 'SELL')),
    price            float8 NOT NULL,
    size             float8 NOT NULL,
    trade_id         text,
    market           text NOT NULL,
    fee_rate_bps     numeric,
    transaction_hash text,
    received_at      timestamptz NOT NULL,
    segment_id       bigint NOT NULL REFERENCES wal_segments (id)
)"""

_V1_INDEXES = (
    "CREATE INDEX trades_token_ts ON trades (token_id, ts DESC)",
    "CREATE INDEX trades_segment_ts ON trades (segment_id, ts)",
)


@dataclass(frozen=True)
class InitResult:
    """What ``init_db`` found and did."""

    version: int
    applied: list[int]
    timescaledb: bool


def _migration_1(conn: psycopg.Connection, timescale: bool) -> None:
    conn.execute(_V1_SEGMENTS)
    conn.execute(_V1_TRADES)
    if timescale:
        conn.execute(
            "SELECT create_hypertable('trades', 'ts', chunk_time_interval => %s)",
            (CHUNK_INTERVAL,),
        )
        conn.execute(
            "ALTER TABLE trades SET (timescaledb.compress,"
            " timescaledb.compress_segmentby = 'token_id',"
            " timescaledb.compress_orderby = 'ts')"
        )
    for statement in _V1_INDEXES:
        conn.execute(statement)


# v2: segment states a run can record without stopping (``unreadable``: the file could
# not be read, retried with backoff), and a partial index so that the run loop and
# ``loader status`` read only unfinished rows, however long the history.
SEGMENT_STATUS_CHECK = "wal_segments_status_check"
_V2_COLUMNS = (
    "ALTER TABLE wal_segments"
    " ADD COLUMN error_at timestamptz,"  # when the error was last met
    " ADD COLUMN retry_at timestamptz,"  # when an unreadable segment is tried again
    " ADD COLUMN tries integer NOT NULL DEFAULT 0"  # failed reads in a row
)
_V2_INDEX = "CREATE INDEX wal_segments_unfinished ON wal_segments (name) WHERE status <> 'loaded'"


def _migration_2(conn: psycopg.Connection, timescale: bool) -> None:
    """Status ``unreadable`` with error_at/retry_at/tries; index of unfinished rows."""
    del timescale  # wal_segments is a plain table either way
    checks = conn.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = 'wal_segments'::regclass"
        " AND contype = 'c' AND pg_get_constraintdef(oid) LIKE %s",
        ("%status%",),
    ).fetchall()
    for (name,) in checks:
        conn.execute(
            sql.SQL("ALTER TABLE wal_segments DROP CONSTRAINT {}").format(sql.Identifier(name))
        )
    conn.execute(
        sql.SQL(
            "ALTER TABLE wal_segments ADD CONSTRAINT {} CHECK"
            " (status IN ('loading', 'loaded', 'corrupt', 'unreadable'))"
        ).format(sql.Identifier(SEGMENT_STATUS_CHECK))
    )
    conn.execute(_V2_COLUMNS)
    conn.execute(_V2_INDEX)


MIGRATIONS: list[tuple[int, Callable[[psycopg.Connection, bool], None]]] = [
    (1, _migration_1),
    (2, _migration_2),
]
LATEST_VERSION = MIGRATIONS[-1][0]


def init_db(
    conn: psycopg.Connection, compress_after: timedelta = DEFAULT_COMPRESS_AFTER
) -> InitResult:
    """Create or migrate the schema; set the compression policy with TimescaleDB."""
    timescale = _enable_timescaledb(conn)
    conn.execute(_SCHEMA_VERSION_TABLE)
    conn.commit()
    applied = []
    for version, migrate in MIGRATIONS:
        with conn.transaction():
            # Serialises concurrent init-db runs: the second waits, then sees the row.
            conn.execute("LOCK TABLE schema_version IN EXCLUSIVE MODE")
            done = conn.execute(
                "SELECT 1 FROM schema_version WHERE version = %s", (version,)
            ).fetchone()
            if done is None:
                migrate(conn, timescale)
                conn.execute(
                    "INSERT INTO schema_version (version, timescaledb) VALUES (%s, %s)",
                    (version, timescale),
                )
                applied.append(version)
    current = schema_version(conn)
    if current > LATEST_VERSION:
        raise SchemaError(
            f"the database schema is version {current}, newer than this loader's "
            f"{LATEST_VERSION}: upgrade polymarket-capture"
        )
    hypertable = _trades_is_hypertable(conn)
    if hypertable:
        _set_compression_policy(conn, compress_after)
        log.info(
            "TimescaleDB: trades is a hypertable (1-day chunks), compressed after %s",
            compress_after,
        )
    elif timescale:
        log.warning(
            "TimescaleDB is installed, but trades was created as a plain table before it "
            "was; converting it (create_hypertable with migrate_data) is a manual step"
        )
    conn.commit()
    return InitResult(current, applied, hypertable)


def schema_version(conn: psycopg.Connection) -> int:
    """The highest applied migration, 0 when none."""
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def _enable_timescaledb(conn: psycopg.Connection) -> bool:
    """Whether the timescaledb extension is (now) installed in this database."""
    try:
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except psycopg.DatabaseError as exc:
        if isinstance(exc, psycopg.OperationalError):
            raise  # the database is away: not a verdict on TimescaleDB
        log.info(
            "TimescaleDB not found (%s): trades is a plain PostgreSQL table with "
            "indexes on (token_id, ts) and (segment_id, ts); no compression",
            str(exc).splitlines()[0],
        )
        return False
    return True


def _trades_is_hypertable(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT timescaledb FROM schema_version WHERE version = 1").fetchone()
    return bool(row and row[0])


def _set_compression_policy(conn: psycopg.Connection, compress_after: timedelta) -> None:
    conn.execute("SELECT remove_compression_policy('trades', if_exists => true)")
    conn.execute(
        sql.SQL("SELECT add_compression_policy('trades', {})").format(sql.Literal(compress_after))
    )
