"""The database schema: versioned migrations, with TimescaleDB as the server allows.

``init_db`` is idempotent and safe to run concurrently: it inspects the server
(:mod:`loader.timescale`), then, in one transaction that first takes an advisory lock,
creates the extension if the plan says so, applies the migrations ``schema_version``
does not list yet, and makes the TimescaleDB objects match the plan
(:mod:`loader.hypertables`).

Schema v2 (migration 2) stores trades in ``trade_rows`` with compact keys: an 8-byte
``token`` into ``token_keys`` (token id and market, :mod:`loader.keys`), ``buy`` for
the side, the transaction hash as 32 bytes, no ``trade_id`` (the feed has none) and no
per-row foreign key (the loader's transaction links rows and segment). ``trades`` is a
view with v1's columns and meanings; ``trades_1m`` holds one-minute candles.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql

from loader import bookhypertables, bookschema, hypertables, keys, timescale
from loader.errors import SchemaError, TokenKeyCollision
from loader.hypertables import Setup
from loader.timescale import Mode, Plan

log = logging.getLogger(__name__)

DEFAULT_COMPRESS_AFTER = timedelta(days=7)  # a week of trades stays fast to reparse
# Timescale's sizing guidance: the indexes of the chunks being written should fit in
# ~25% of shared_buffers. A day of trades (~1M rows) indexes to ~40 MB at 40 B per row.
CHUNK_INTERVAL = timedelta(days=1)
# pg_advisory_xact_lock key that serialises init-db runs ("pmci").
INIT_LOCK_KEY = 0x706D6369

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


_V2_TOKEN_KEYS = """
CREATE TABLE token_keys (
    id       bigint PRIMARY KEY,        -- loader.keys.token_key(token_id, market)
    token_id text NOT NULL,
    market   text NOT NULL,
    UNIQUE (token_id, market)
)"""

_V2_TRADE_ROWS = """
CREATE TABLE trade_rows (
    ts           timestamptz NOT NULL,
    token        bigint NOT NULL,      -- token_keys.id
    buy          boolean NOT NULL,     -- side = 'BUY' (taker side)
    price        float8 NOT NULL,
    size         float8 NOT NULL,
    fee_rate_bps numeric,
    tx_hash      bytea,                -- a 0x + 64 lowercase hex hash, as its 32 bytes
    tx_hash_text text,                 -- any other transaction_hash, verbatim
    received_at  timestamptz NOT NULL,
    segment_id   bigint NOT NULL       -- wal_segments.id
)"""

# (token, ts): per-token time queries. BRIN on segment_id: rows arrive segment by
# segment, so a few bytes per 128 pages find a segment's rows for reparse, at almost
# no cost to COPY (a btree on it cost a third of the load rate in v1).
_V2_INDEXES = (
    "CREATE INDEX trade_rows_token_ts ON trade_rows (token, ts DESC)",
    "CREATE INDEX trade_rows_segment ON trade_rows USING brin (segment_id)",
)

_V2_TRADES_VIEW = """
CREATE VIEW trades AS
SELECT r.ts, k.token_id, CASE WHEN r.buy THEN 'BUY' ELSE 'SELL' END AS side,
       r.price, r.size, NULL::text AS trade_id, k.market, r.fee_rate_bps,
       coalesce('0x' || encode(r.tx_hash, 'hex'), r.tx_hash_text) AS transaction_hash,
       r.received_at, r.segment_id
  FROM trade_rows r JOIN token_keys k ON k.id = r.token"""


@dataclass(frozen=True)
class InitResult:
    """What ``init_db`` found and did."""

    version: int
    applied: list[int]
    setup: Setup
    note: str = ""

    @property
    def timescaledb(self) -> bool:
        """Whether trades live in a hypertable."""
        return self.setup.hypertable


Migration = Callable[[psycopg.Connection, Plan], None]


def _migration_1(conn: psycopg.Connection, plan: Plan) -> None:
    conn.execute(_V1_SEGMENTS)
    conn.execute(_V1_TRADES)
    if plan.timescaledb:
        conn.execute(
            "SELECT create_hypertable('trades', 'ts', chunk_time_interval => %s)",
            (CHUNK_INTERVAL,),
        )
        if plan.compression:
            hypertables.try_enable_compression(conn, "trades", "token_id", "ts")
    for statement in _V1_INDEXES:
        conn.execute(statement)


def _migration_2(conn: psycopg.Connection, plan: Plan) -> None:
    """v1 -> v2: trades move into trade_rows with compact keys; every row is kept."""
    conn.execute("ALTER TABLE trades RENAME TO trades_v1")
    conn.execute(_V2_TOKEN_KEYS)
    conn.execute(_V2_TRADE_ROWS)
    if plan.timescaledb:
        conn.execute(
            "SELECT create_hypertable('trade_rows', 'ts', chunk_time_interval => %s,"
            " create_default_indexes => false)",
            (CHUNK_INTERVAL,),
        )
    for statement in _V2_INDEXES:
        conn.execute(statement)
    _copy_v1_rows(conn)
    conn.execute("DROP TABLE trades_v1")
    conn.execute(_V2_TRADES_VIEW)


def _copy_v1_rows(conn: psycopg.Connection) -> None:
    pairs = conn.execute(
        "INSERT INTO token_keys (id, token_id, market)"
        f" SELECT {keys.SQL_TOKEN_KEY}, token_id, market"
        " FROM (SELECT DISTINCT token_id, market FROM trades_v1) p"
        " ON CONFLICT DO NOTHING"
    ).rowcount
    distinct = conn.execute(
        "SELECT count(*) FROM (SELECT DISTINCT token_id, market FROM trades_v1) p"
    ).fetchone()
    if distinct is None or pairs != distinct[0]:
        raise TokenKeyCollision(
            f"{distinct[0] if distinct else '?'} (token, market) pairs gave {pairs} keys: "
            "two pairs share a key; nothing was migrated (report this as a bug)"
        )
    moved = conn.execute(
        "INSERT INTO trade_rows (ts, token, buy, price, size, fee_rate_bps, tx_hash,"
        " tx_hash_text, received_at, segment_id)"
        f" SELECT ts, {keys.SQL_TOKEN_KEY}, side = 'BUY', price, size, fee_rate_bps,"
        f" CASE WHEN transaction_hash ~ %(re)s"
        "  THEN decode(substr(transaction_hash, 3), 'hex') END,"
        f" CASE WHEN transaction_hash ~ %(re)s THEN NULL ELSE transaction_hash END,"
        " received_at, segment_id FROM trades_v1",
        {"re": keys.SQL_HASH_PATTERN},
    ).rowcount
    if moved:
        log.info("schema v2: moved %d trades from the v1 table into trade_rows", moved)


# v3: segment states a run can record without stopping (``unreadable``: the file could
# not be read, retried with backoff), and a partial index so that the run loop and
# ``loader status`` read only unfinished rows, however long the history.
SEGMENT_STATUS_CHECK = "wal_segments_status_check"
_V3_COLUMNS = (
    "ALTER TABLE wal_segments"
    " ADD COLUMN error_at timestamptz,"  # when the error was last met
    " ADD COLUMN retry_at timestamptz,"  # when an unreadable segment is tried again
    " ADD COLUMN tries integer NOT NULL DEFAULT 0"  # failed reads in a row
)
_V3_INDEX = "CREATE INDEX wal_segments_unfinished ON wal_segments (name) WHERE status <> 'loaded'"


def _migration_3(conn: psycopg.Connection, plan: Plan) -> None:
    """Status ``unreadable`` with error_at/retry_at/tries; index of unfinished rows."""
    del plan  # wal_segments is a plain table either way
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
    conn.execute(_V3_COLUMNS)
    conn.execute(_V3_INDEX)


# v5: coverage (loader.carry). The state carried from commit to commit and segment to
# segment, and the gaps, one row per segment that ended them or left them open.
_V5_STATEMENTS = (
    """CREATE TABLE segment_carry (
    segment_id bigint PRIMARY KEY,     -- wal_segments.id
    state      jsonb NOT NULL,         -- loader.coverage.Coverage at the committed offset
    last_ns    bigint NOT NULL         -- the last record's ts_ns (a crash's gap starts there)
)""",
    """CREATE TABLE gap_rows (
    segment_id bigint NOT NULL,        -- the segment that ended it, or left it open
    shard      text NOT NULL,          -- s<shard>, c<conn> (no shard field), or dropped
    started_at timestamptz NOT NULL,
    ended_at   timestamptz,            -- NULL: still open at the end of that segment
    token_ids  text[] NOT NULL,
    cause      text NOT NULL
)""",
    "CREATE INDEX gap_rows_segment ON gap_rows (segment_id)",
    "CREATE INDEX gap_rows_ended ON gap_rows (ended_at)",
    "CREATE INDEX gap_rows_gap ON gap_rows (shard, started_at)",
    "CREATE INDEX gap_rows_open ON gap_rows (shard, started_at) WHERE ended_at IS NULL",
    # A gap ends in exactly one segment; until then each segment it was open at the end
    # of holds an open row. The view: every ended row, and for a gap not ended anywhere
    # the open row of the latest segment. A filter on ended_at reaches the index.
    """CREATE VIEW gaps AS
SELECT started_at, ended_at, token_ids, cause, segment_id, shard
  FROM gap_rows WHERE ended_at IS NOT NULL
UNION ALL
SELECT * FROM (
  SELECT DISTINCT ON (shard, started_at) started_at, ended_at, token_ids, cause, segment_id,
         shard
    FROM gap_rows o
   WHERE ended_at IS NULL AND NOT EXISTS (
         SELECT 1 FROM gap_rows e WHERE e.shard = o.shard AND e.started_at = o.started_at
            AND e.ended_at IS NOT NULL)
   ORDER BY shard, started_at, segment_id DESC) still_open""",
)


def _migration_5(conn: psycopg.Connection, plan: Plan) -> None:
    """Coverage: segment_carry, gap_rows and the gaps view (filled by loading)."""
    del plan  # small plain tables either way
    for statement in _V5_STATEMENTS:
        conn.execute(statement)


BOOKS_VERSION = 4  # the migration that makes the book tables

MIGRATIONS: list[tuple[int, Migration]] = [
    (1, _migration_1),
    (2, _migration_2),
    (3, _migration_3),
    (BOOKS_VERSION, bookschema.migration),  # order books and market metadata
    (5, _migration_5),  # coverage: gaps and the state carried between segments
]
LATEST_VERSION = MIGRATIONS[-1][0]


def init_db(
    conn: psycopg.Connection,
    compress_after: timedelta | None = None,
    *,
    mode: Mode = Mode.AUTO,
    chunk_interval: timedelta = CHUNK_INTERVAL,
    upto: int = LATEST_VERSION,
) -> InitResult:
    """Create or migrate the schema to ``upto`` (tests stop early) and set TimescaleDB up.

    Raises TimescaleSetupError (before changing anything) when ``mode`` cannot be met.
    """
    plan = timescale.decide(timescale.inspect(conn), mode)
    log.info("%s", plan.note)
    with conn.transaction():
        # First, before any DDL: concurrent init-db runs wait here, then find it done.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (INIT_LOCK_KEY,))
        if plan.timescaledb:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        conn.execute(_SCHEMA_VERSION_TABLE)
        done = {row[0] for row in conn.execute("SELECT version FROM schema_version")}
        if done and max(done) > LATEST_VERSION:
            raise SchemaError(
                f"the database schema is version {max(done)}, newer than this loader's "
                f"{LATEST_VERSION}: upgrade polymarket-capture"
            )
        applied = []
        for version, migrate in MIGRATIONS:
            if version in done or version > upto:
                continue
            migrate(conn, plan)
            conn.execute(
                "INSERT INTO schema_version (version, timescaledb) VALUES (%s, %s)",
                (version, plan.timescaledb),
            )
            applied.append(version)
        current = max(done | set(applied), default=0)
        setup = Setup(plan.timescaledb, plan.compression, False)
        if current >= 2:
            # Without --compress-after an existing policy stays as it is.
            after = hypertables.describe(conn).compress_after
            if compress_after is not None or after is None:
                after = DEFAULT_COMPRESS_AFTER if compress_after is None else compress_after
            setup = hypertables.converge(conn, plan, after, chunk_interval)
            if current >= BOOKS_VERSION:
                bookhypertables.converge(conn, plan, after, chunk_interval)
    log.info("schema version %d: %s", current, setup.describe())
    return InitResult(current, applied, setup, plan.note)


def schema_version(conn: psycopg.Connection) -> int:
    """The highest applied migration, 0 when none."""
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def setup_summary(conn: psycopg.Connection) -> dict[str, Any]:
    """The database's TimescaleDB setup, for ``loader status``."""
    facts = timescale.inspect(conn)
    setup = hypertables.describe(conn)
    return {
        "timescaledb": facts.installed,
        "timescaledb_available": facts.version if facts.available else False,
        "edition": facts.edition.value if facts.installed else None,
        "trades": "hypertable" if setup.hypertable else "plain table",
        "compression": setup.compression,
        "compress_after": hypertables.human(setup.compress_after)
        if setup.compress_after is not None
        else None,
        "compress_after_s": setup.compress_after.total_seconds()
        if setup.compress_after is not None
        else None,
        "candles": "continuous aggregate" if setup.continuous_candles else "view",
        "summary": setup.describe(),
    }
