"""SQL for segments and trades: the only place that writes either table.

Every write happens inside a transaction the caller opened, so the trades of a batch
and the segment's new ``offset_bytes`` and counts commit together (exactly-once).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.string import BytesBinaryDumper

from loader.errors import ConcurrentLoadError, TokenKeyCollision
from loader.keys import split_hash, token_key
from loader.parse import BatchResult, TradeRow

# Schema v2: trades are written to trade_rows with compact keys (loader.keys); the
# `trades` view gives them back in v1's columns.
STORAGE_COLUMNS = (
    "ts",
    "token",
    "buy",
    "price",
    "size",
    "fee_rate_bps",
    "tx_hash",
    "tx_hash_text",
    "received_at",
    "segment_id",
)
COPY_SQL = f"COPY trade_rows ({', '.join(STORAGE_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
# Binary COPY needs the exact PostgreSQL type of every column, in STORAGE_COLUMNS order.
COPY_TYPES = [
    "timestamptz",
    "int8",
    "bool",
    "float8",
    "float8",
    "numeric",
    "bytea",
    "text",
    "timestamptz",
    "int8",
]
# Reparse on compressed chunks: TimescaleDB refuses a DML that decompresses more than
# this many rows (default 100,000); 0 lifts the limit for that transaction only.
_DECOMPRESS_LIMIT = "timescaledb.max_tuples_decompressed_per_dml_transaction"

_STATE_COLUMNS = (
    "id, name, status, offset_bytes, parser_version, first_event_at, last_event_at, tries"
)


@dataclass(frozen=True)
class SegmentState:
    """A ``wal_segments`` row, as far as loading needs it."""

    id: int
    name: str
    status: str
    offset_bytes: int
    parser_version: int
    first_event_at: datetime | None
    last_event_at: datetime | None
    tries: int = 0  # failed reads in a row (status ``unreadable``)


@dataclass
class Pending:
    """Work written in the open transaction on one segment, up to byte offset ``end``."""

    end: int
    trades: int = 0
    records: int = 0
    frames: int = 0
    error_count: int = 0
    first: datetime | None = None
    last: datetime | None = None

    def add(self, end: int, result: BatchResult) -> None:
        self.end = end
        self.records += result.records
        self.frames += result.frames
        self.error_count += len(result.errors)
        if result.rows:
            self.trades += len(result.rows)
            times = [row.ts for row in result.rows]
            low, high = min(times), max(times)
            self.first = low if self.first is None else min(self.first, low)
            self.last = high if self.last is None else max(self.last, high)


def all_states(conn: psycopg.Connection) -> dict[str, SegmentState]:
    """Every known segment by name (reparse --all/--stale only: it reads every row)."""
    rows = conn.execute(f"SELECT {_STATE_COLUMNS} FROM wal_segments").fetchall()
    return {row[1]: SegmentState(*row) for row in rows}


def states_for(conn: psycopg.Connection, names: list[str]) -> dict[str, SegmentState]:
    """The known segments among ``names``, by name (one indexed lookup per name)."""
    rows = conn.execute(
        f"SELECT {_STATE_COLUMNS} FROM wal_segments WHERE name = ANY(%s)", (names,)
    ).fetchall()
    return {row[1]: SegmentState(*row) for row in rows}


def mark_unreadable(
    conn: psycopg.Connection, state: SegmentState, error: str, retry_in_s: float
) -> None:
    """Record that the segment's file could not be read; its committed offset stays.

    Only a segment still ``loading`` is marked: one a reparse finished meanwhile keeps
    its status.
    """
    with conn.transaction():
        conn.execute(
            """UPDATE wal_segments SET status = 'unreadable', error = %s, error_offset = NULL,
                error_at = now(), tries = tries + 1, updated_at = now(),
                retry_at = now() + make_interval(secs => %s)
               WHERE id = %s AND status = 'loading'""",
            (error, retry_in_s, state.id),
        )


def resume_unreadable(conn: psycopg.Connection, state: SegmentState) -> SegmentState:
    """Put an ``unreadable`` segment back to ``loading`` for another try (the error and
    ``tries`` stay until it loads). Returns the segment's state."""
    with conn.transaction():
        row = conn.execute(
            f"""UPDATE wal_segments SET status = 'loading', updated_at = now()
                WHERE id = %s AND status = 'unreadable' RETURNING {_STATE_COLUMNS}""",
            (state.id,),
        ).fetchone()
    return SegmentState(*row) if row else state


def clear_unreadable(conn: psycopg.Connection, segment_id: int) -> None:
    """Forget the failed reads of a segment that has loaded since."""
    with conn.transaction():
        conn.execute(
            "UPDATE wal_segments SET tries = 0, error_at = NULL, retry_at = NULL WHERE id = %s",
            (segment_id,),
        )


def ensure_segment(conn: psycopg.Connection, name: str, parser_version: int) -> SegmentState:
    """The row of segment ``name``, created (status ``loading``, offset 0) if new."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO wal_segments (name, parser_version) VALUES (%s, %s)"
            " ON CONFLICT (name) DO NOTHING",
            (name, parser_version),
        )
        row = conn.execute(
            f"SELECT {_STATE_COLUMNS} FROM wal_segments WHERE name = %s", (name,)
        ).fetchone()
    assert row is not None
    return SegmentState(*row)


def lock_segment(conn: psycopg.Connection, segment_id: int) -> SegmentState:
    """Lock the segment's row until the transaction ends; return its committed state."""
    row = conn.execute(
        f"SELECT {_STATE_COLUMNS} FROM wal_segments WHERE id = %s FOR UPDATE", (segment_id,)
    ).fetchone()
    assert row is not None, f"segment id {segment_id} vanished"
    return SegmentState(*row)


def check_unchanged(current: SegmentState, expected_offset: int) -> None:
    """ConcurrentLoadError unless the segment is still loading at ``expected_offset``."""
    if current.status != "loading" or current.offset_bytes != expected_offset:
        raise ConcurrentLoadError(
            f"segment {current.name} changed under this loader (now {current.status} at "
            f"byte {current.offset_bytes}, expected loading at {expected_offset}); "
            "another loader or a reparse got there first"
        )


class KeyBook:
    """The token keys this process knows are committed, and those its open transaction adds.

    Each (token, market) pair is written to ``token_keys`` once per process, not once per
    transaction. A key becomes known only after its transaction committed (``confirm``);
    after a rollback (``discard``) it is written again, so no trade row ever points at a
    key that is not there.
    """

    def __init__(self) -> None:
        self.known: set[int] = set()
        self.pending: dict[tuple[str, str], int] = {}

    def confirm(self) -> None:
        self.known.update(self.pending.values())
        self.pending.clear()

    def discard(self) -> None:
        self.pending.clear()


@contextmanager
def trade_copy(
    conn: psycopg.Connection, segment_id: int, book: KeyBook
) -> Iterator[Callable[[list[TradeRow]], None]]:
    """A binary COPY into trade_rows; yields ``write(rows)``, which tags rows with the segment.

    Rows stream to the server while the caller parses more, so parsing and the server's
    insert work overlap. Pairs not in ``book.known`` go to ``token_keys`` after the COPY, in
    the same transaction; the caller confirms or discards ``book`` when it ends. An
    exception inside aborts the COPY (and so the transaction).
    """
    known, pending = book.known, book.pending
    with conn.cursor() as cur:
        with binary_copy(cur, COPY_SQL, COPY_TYPES) as copy:
            write_row = copy.write_row

            def write(rows: list[TradeRow]) -> None:
                for ts, token_id, side, price, size, _, market, fee, tx, received in rows:
                    key = token_key(token_id, market)
                    if key not in known:
                        pending[(token_id, market)] = key
                    raw, text = split_hash(tx)
                    write_row(
                        (ts, key, side == "BUY", price, size, fee, raw, text, received, segment_id)
                    )

            yield write
        if pending:
            write_token_keys(cur, pending)


@contextmanager
def binary_copy(cur: psycopg.Cursor[Any], statement: str, types: list[str]) -> Iterator[Any]:
    """``cur.copy(statement)`` in binary with the column ``types`` set.

    By type OID psycopg dumps bytea with its DB-API dumper, a Python call per value (it
    also takes Binary objects); registered on this cursor only, the bytes dumper writes
    the same format in C.
    """
    cur.adapters.register_dumper(None, BytesBinaryDumper)
    with cur.copy(statement) as copy:
        copy.set_types(types)
        yield copy


def write_token_keys(cur: psycopg.Cursor[Any], pairs: dict[tuple[str, str], int]) -> None:
    """Record each pair's key; TokenKeyCollision if a key already names another pair."""
    ids = list(pairs.values())
    tokens = [pair[0] for pair in pairs]
    markets = [pair[1] for pair in pairs]
    cur.execute(
        "INSERT INTO token_keys (id, token_id, market)"
        " SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[]) ON CONFLICT DO NOTHING",
        (ids, tokens, markets),
    )
    clash = cur.execute(
        "SELECT u.token_id, u.market, k.token_id, k.market"
        " FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS u(id, token_id, market)"
        " LEFT JOIN token_keys k ON k.id = u.id"
        " WHERE k.id IS NULL OR k.token_id <> u.token_id OR k.market <> u.market LIMIT 1",
        (ids, tokens, markets),
    ).fetchone()
    if clash is not None:
        raise TokenKeyCollision(
            f"token {clash[0]} of market {clash[1]} has the storage key of token {clash[2]} "
            f"of market {clash[3]}; nothing of this transaction was written "
            "(report this as a bug)"
        )


def record_progress(
    conn: psycopg.Connection,
    segment_id: int,
    pending: Pending,
    *,
    status: str,
    parser_version: int,
    error: tuple[int, str] | None = None,
) -> None:
    """Move the segment to ``pending.end`` and add its counts (same transaction as COPY)."""
    params: dict[str, Any] = {
        "id": segment_id,
        "end": pending.end,
        "records": pending.records,
        "frames": pending.frames,
        "trades": pending.trades,
        "errors": pending.error_count,
        "first": pending.first,
        "last": pending.last,
        "status": status,
        "version": parser_version,
        "error_offset": error[0] if error else None,
        "error": error[1] if error else None,
    }
    conn.execute(
        """UPDATE wal_segments SET
            offset_bytes = %(end)s, records = records + %(records)s,
            frames = frames + %(frames)s, trades = trades + %(trades)s,
            parse_errors = parse_errors + %(errors)s,
            first_event_at = LEAST(first_event_at, %(first)s),
            last_event_at = GREATEST(last_event_at, %(last)s),
            status = %(status)s, parser_version = LEAST(parser_version, %(version)s),
            error = %(error)s, error_offset = %(error_offset)s, updated_at = now(),
            loaded_at = CASE WHEN %(status)s = 'loading' THEN loaded_at ELSE now() END
           WHERE id = %(id)s""",
        params,
    )


def reset_segment(conn: psycopg.Connection, state: SegmentState, parser_version: int) -> int:
    """Delete the segment's trades and zero its counts (reparse). Returns rows deleted.

    The DELETE is bounded by the segment's first/last event time as literals, never as
    parameters: a prepared generic plan would leave TimescaleDB to exclude chunks only at
    run time, after decompressing every one of them. The decompression limit is lifted for
    this transaction: a reparse rewrites whole compressed batches by design.
    """
    deleted = 0
    if state.first_event_at is not None and state.last_event_at is not None:
        conn.execute("SELECT set_config(%s, '0', true)", (_DECOMPRESS_LIMIT,))
        query = sql.SQL(
            "DELETE FROM trade_rows WHERE segment_id = {} AND ts BETWEEN {} AND {}"
        ).format(
            sql.Literal(state.id),
            sql.Literal(state.first_event_at),
            sql.Literal(state.last_event_at),
        )
        deleted = conn.execute(query, prepare=False).rowcount
    conn.execute(
        """UPDATE wal_segments SET status = 'loading', offset_bytes = 0, records = 0,
            frames = 0, trades = 0, parse_errors = 0, first_event_at = NULL,
            last_event_at = NULL, parser_version = %s, error = NULL, error_offset = NULL,
            updated_at = now()
           WHERE id = %s""",
        (parser_version, state.id),
    )
    return deleted
