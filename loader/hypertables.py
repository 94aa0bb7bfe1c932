"""TimescaleDB objects of schema v2: made to match the :class:`~loader.timescale.Plan`.

:func:`converge` is run by every ``init-db`` (every loader service start) inside its
locked transaction, and changes only what differs: ``trade_rows`` becomes a hypertable
when it should be one, compression is switched on once, the compression policy is
created once and altered (same job id, history kept) only when ``--compress-after``
changes, and ``trades_1m`` is a continuous aggregate where the edition has them and a
plain view with the same columns elsewhere. :func:`describe` reports what is there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from loader.bookschema import BOOK_TABLES
from loader.timescale import Plan

log = logging.getLogger(__name__)

TRADES_TABLE = "trade_rows"
CANDLES_CAGG = "trade_candles_1m"
SEGMENTBY = "token"  # per-token time queries are what users run; one batch per token
ORDERBY = "ts DESC"  # the latest trades first; the min/max per batch bounds reparse
CANDLE_REFRESH_EVERY = timedelta(minutes=1)  # the newest materialised minute lags by this
CANDLE_END_OFFSET = timedelta(minutes=1)  # the current minute is still filling up
LICENSE_ERROR = "license"  # in "functionality not supported under the current ... license"

_CANDLE_COLUMNS = """
    {first} AS open, max(price) AS high, min(price) AS low, {last} AS close,
    sum(size) AS volume, sum(price * size) AS notional, count(*) AS trades,
    sum(CASE WHEN buy THEN size ELSE 0 END) AS buy_volume,
    sum(CASE WHEN buy THEN 0 ELSE size END) AS sell_volume"""

_CAGG = (
    f"CREATE MATERIALIZED VIEW {CANDLES_CAGG}"
    " WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS"
    " SELECT time_bucket(INTERVAL '1 minute', ts) AS bucket, token,"
    + _CANDLE_COLUMNS.format(first="first(price, ts)", last="last(price, ts)")
    + f" FROM {TRADES_TABLE} GROUP BY time_bucket(INTERVAL '1 minute', ts), token"
    " WITH NO DATA"
)

# The same columns and types from either source, so CREATE OR REPLACE VIEW can switch.
_CANDLES_SELECT = """SELECT c.bucket::timestamptz AS bucket, k.token_id, k.market,
    c.open::float8 AS open, c.high::float8 AS high, c.low::float8 AS low,
    c.close::float8 AS close, c.volume::float8 AS volume, c.notional::float8 AS notional,
    c.trades::bigint AS trades, c.buy_volume::float8 AS buy_volume,
    c.sell_volume::float8 AS sell_volume
  FROM ({source}) c JOIN token_keys k ON k.id = c.token"""

_PLAIN_CANDLES = (
    "SELECT date_bin(INTERVAL '1 minute', ts, TIMESTAMPTZ '2000-01-01 00:00:00+00')"
    " AS bucket, token,"
    + _CANDLE_COLUMNS.format(
        first="(array_agg(price ORDER BY ts, received_at))[1]",
        last="(array_agg(price ORDER BY ts DESC, received_at DESC))[1]",
    )
    + f" FROM {TRADES_TABLE} GROUP BY 1, token"
)


@dataclass(frozen=True)
class Setup:
    """What the database holds after :func:`converge`, for the log, the CLI and status."""

    hypertable: bool
    compression: bool
    continuous_candles: bool
    compress_after: timedelta | None = None
    note: str = ""

    def describe(self) -> str:
        if not self.hypertable:
            return "plain PostgreSQL tables; trades_1m is a view"
        compressed = (
            f"compressed after {_human(self.compress_after)}"
            if self.compression
            else "no compression"
        )
        candles = "a continuous aggregate" if self.continuous_candles else "a view"
        return f"TimescaleDB hypertable ({compressed}); trades_1m is {candles}"


def human(interval: timedelta | None) -> str:
    """``7 days``, ``12 hours``, ``90 minutes``: how durations are shown to users."""
    return _human(interval)


def _human(interval: timedelta | None) -> str:
    if interval is None:
        return "(no policy)"
    seconds = int(interval.total_seconds())
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds % size == 0 and seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"


def converge(
    conn: psycopg.Connection, plan: Plan, compress_after: timedelta, chunk_interval: timedelta
) -> Setup:
    """Make the TimescaleDB objects match ``plan`` (inside the caller's transaction)."""
    hypertable = is_hypertable(conn)
    if hypertable and not plan.timescaledb:
        log.warning(
            "%s is already a TimescaleDB hypertable; --timescaledb off leaves it, its "
            "compression and its candles as they are",
            TRADES_TABLE,
        )
        return describe(conn)
    if plan.timescaledb and not hypertable:
        _make_hypertable(conn, chunk_interval)
        hypertable = True
    compression = False
    if hypertable and plan.compression:
        compression = _compression_enabled(conn) or try_enable_compression(conn)
        if compression:
            ensure_compression_policy(conn, compress_after)
    continuous = hypertable and plan.compression and _ensure_continuous_candles(conn)
    source = f"SELECT * FROM {CANDLES_CAGG}" if continuous else _PLAIN_CANDLES
    if not continuous and hypertable and _cagg_exists(conn):
        conn.execute(f"DROP MATERIALIZED VIEW {CANDLES_CAGG} CASCADE")
    conn.execute(f"CREATE OR REPLACE VIEW trades_1m AS {_CANDLES_SELECT.format(source=source)}")
    return Setup(hypertable, compression, continuous, compress_after if compression else None)


def is_hypertable(conn: psycopg.Connection) -> bool:
    if not _has_extension(conn):
        return False
    row = conn.execute(
        "SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_name = %s",
        (TRADES_TABLE,),
    ).fetchone()
    return bool(row and row[0])


def describe(conn: psycopg.Connection) -> Setup:
    """What is there now (read-only), for ``loader status``."""
    if not is_hypertable(conn):
        return Setup(False, False, False)
    compression = _compression_enabled(conn)
    job = _compression_job(conn)
    after = job[1] if job else None
    return Setup(True, compression, _cagg_exists(conn), after)


def compression_stats(conn: psycopg.Connection) -> dict[str, Any] | None:
    """Chunk counts and bytes before/after compression, None without compression."""
    if not is_hypertable(conn) or not _compression_enabled(conn):
        return None
    row = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE compression_status = 'Compressed'),"
        " coalesce(sum(before_compression_total_bytes), 0),"
        " coalesce(sum(after_compression_total_bytes), 0)"
        " FROM chunk_compression_stats(%s)",
        (TRADES_TABLE,),
    ).fetchone()
    assert row is not None
    return {
        "chunks": int(row[0]),
        "compressed_chunks": int(row[1]),
        "before_bytes": int(row[2]),
        "after_bytes": int(row[3]),
    }


def _has_extension(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    return bool(row and row[0])


def _cagg_exists(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM timescaledb_information.continuous_aggregates WHERE view_name = %s",
        (CANDLES_CAGG,),
    ).fetchone()
    return bool(row and row[0])


def _make_hypertable(conn: psycopg.Connection, chunk_interval: timedelta) -> None:
    row = conn.execute(f"SELECT EXISTS (SELECT 1 FROM {TRADES_TABLE})").fetchone()
    migrate = bool(row and row[0])
    if migrate:
        log.info("converting %s into a hypertable (moving its rows into chunks)", TRADES_TABLE)
    conn.execute(
        "SELECT create_hypertable(%s, 'ts', chunk_time_interval => %s,"
        " create_default_indexes => false, migrate_data => %s)",
        (TRADES_TABLE, chunk_interval, migrate),
    )


def _compression_enabled(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT compression_enabled FROM timescaledb_information.hypertables"
        " WHERE hypertable_name = %s",
        (TRADES_TABLE,),
    ).fetchone()
    return bool(row and row[0])


def try_enable_compression(
    conn: psycopg.Connection,
    table: str = TRADES_TABLE,
    segmentby: str = SEGMENTBY,
    orderby: str = ORDERBY,
) -> bool:
    """Switch compression on; False when the edition has none (Apache-only)."""
    try:
        with conn.transaction():
            conn.execute(
                sql.SQL(
                    "ALTER TABLE {} SET (timescaledb.compress, timescaledb.compress_segmentby"
                    " = {}, timescaledb.compress_orderby = {})"
                ).format(sql.Identifier(table), sql.Literal(segmentby), sql.Literal(orderby))
            )
    except psycopg.errors.FeatureNotSupported as exc:
        if LICENSE_ERROR not in str(exc):
            raise
        log.warning("TimescaleDB here has no compression (%s)", str(exc).splitlines()[0])
        return False
    return True


def _compression_job(
    conn: psycopg.Connection, table: str = TRADES_TABLE
) -> tuple[int, timedelta, Any] | None:
    row = conn.execute(
        "SELECT job_id, (config->>'compress_after')::interval, config"
        " FROM timescaledb_information.jobs"
        " WHERE hypertable_name = %s AND proc_name = 'policy_compression'",
        (table,),
    ).fetchone()
    return (int(row[0]), row[1], row[2]) if row else None


def ensure_compression_policy(
    conn: psycopg.Connection, compress_after: timedelta, table: str = TRADES_TABLE
) -> None:
    """The table's compression policy: created once, altered in place only on a change."""
    job = _compression_job(conn, table)
    if job is None:
        conn.execute(
            sql.SQL("SELECT add_compression_policy({}, {})").format(
                sql.Literal(table), sql.Literal(compress_after)
            )
        )
    elif job[1] != compress_after:
        conn.execute(
            "SELECT alter_job(%s, config => jsonb_set(%s::jsonb, '{compress_after}',"
            " to_jsonb(%s::interval::text)))",
            (job[0], Jsonb(job[2]), compress_after),
        )
        log.info(
            "compression policy of %s (job %d): compress after %s, was %s",
            table,
            job[0],
            compress_after,
            job[1],
        )


def _ensure_continuous_candles(conn: psycopg.Connection) -> bool:
    """The continuous aggregate and its refresh policy; False if the edition has none."""
    if _cagg_exists(conn):
        return True
    try:
        with conn.transaction():
            conn.execute("DROP VIEW IF EXISTS trades_1m")
            conn.execute(_CAGG)
            conn.execute(
                "SELECT add_continuous_aggregate_policy(%s, start_offset => NULL,"
                " end_offset => %s, schedule_interval => %s)",
                (CANDLES_CAGG, CANDLE_END_OFFSET, CANDLE_REFRESH_EVERY),
            )
    except psycopg.errors.FeatureNotSupported as exc:
        if LICENSE_ERROR not in str(exc):
            raise
        return False
    return True


# Chunks with rows outside their compressed batches: what a reparse (or late data) leaves.
_PARTIAL_CHUNKS = f"""
SELECT format('%I.%I', c.schema_name, c.table_name),
       format('%I.%I', cc.schema_name, cc.table_name)
  FROM _timescaledb_catalog.chunk c
  JOIN _timescaledb_catalog.hypertable h ON h.id = c.hypertable_id
  JOIN _timescaledb_catalog.chunk cc ON cc.id = c.compressed_chunk_id
 WHERE h.table_name IN ('{TRADES_TABLE}', {", ".join(f"'{t}'" for t in BOOK_TABLES)})
   AND NOT c.dropped
   AND c.status & {8} <> 0  -- CHUNK_STATUS_COMPRESSED_PARTIAL
 ORDER BY c.id"""


def recompress_partial(conn: psycopg.Connection) -> int:
    """Recompress the chunks a reparse left partly uncompressed, reclaiming their space.

    In this order, because each step needs the one before: VACUUM the compressed part
    (so the new batches reuse the space of the deleted ones instead of doubling it),
    recompress, then VACUUM and REINDEX the now empty uncompressed part (its index keeps
    every page the reparse wrote otherwise). Returns the number of chunks recompressed.
    """
    if not is_hypertable(conn) or not _compression_enabled(conn):
        conn.commit()
        return 0
    chunks = conn.execute(_PARTIAL_CHUNKS).fetchall()
    conn.commit()
    if not chunks:
        return 0
    conn.autocommit = True
    try:
        for chunk, compressed in chunks:
            conn.execute(sql.SQL("VACUUM {}").format(sql.SQL(compressed)))
            conn.execute("SELECT compress_chunk(%s::regclass)", (chunk,))
            conn.execute(sql.SQL("VACUUM {}").format(sql.SQL(chunk)))
            conn.execute(sql.SQL("REINDEX TABLE {}").format(sql.SQL(chunk)))
            conn.execute(sql.SQL("VACUUM {}").format(sql.SQL(compressed)))
            log.info("recompressed %s after the reparse", chunk)
    finally:
        conn.autocommit = False
    return len(chunks)
