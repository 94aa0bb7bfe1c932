"""SQL for the book tables and the book progress of segments (``wal_segments.books_*``).

Like :mod:`loader.store`, every write happens inside a transaction the caller opened:
the book rows of some zstd frames and the segment's new ``books_offset`` commit
together. One connection runs one COPY at a time: price changes (most book rows) stream
into theirs while the next frames are parsed (:class:`ChangeStream`); the trades and the
other book rows are buffered and copied table by table after it, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import psycopg
from psycopg import sql

from loader import bookcopy
from loader.books import BookResult, ChangeRow
from loader.bookschema import BOOK_TABLES
from loader.keys import token_key
from loader.store import _DECOMPRESS_LIMIT, KeyBook, binary_copy, write_token_keys

_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "book_snapshot_rows": (
        ("ts", "timestamptz"),
        ("token", "int8"),
        ("received_at", "timestamptz"),
        ("segment_id", "int8"),
        ("bids_price", "float8[]"),
        ("bids_size", "float8[]"),
        ("asks_price", "float8[]"),
        ("asks_size", "float8[]"),
        ("hash", "bytea"),
        ("hash_text", "text"),
    ),
    "price_change_rows": bookcopy.CHANGE_COLUMNS,
    "best_bid_ask_rows": bookcopy.QUOTE_COLUMNS,
    "tick_size_change_rows": (
        ("ts", "timestamptz"),
        ("token", "int8"),
        ("old_tick_size", "float8"),
        ("new_tick_size", "float8"),
        ("received_at", "timestamptz"),
        ("segment_id", "int8"),
    ),
}
_HASH_CACHE = 1 << 12  # book hashes repeat while a book is unchanged


@dataclass(frozen=True)
class BookState:
    """The book progress of one segment (its ``wal_segments`` row)."""

    id: int
    name: str
    status: str
    offset_bytes: int
    books_offset: int
    books_first_at: datetime | None
    books_last_at: datetime | None


@dataclass
class BookPending:
    """Book rows written in the open transaction on one segment, up to byte ``end``."""

    end: int
    rows: int = 0
    errors: int = 0
    first: datetime | None = None
    last: datetime | None = None

    def add(self, end: int, result: BookResult) -> None:
        self.end = end
        self.errors += len(result.errors)
        bounds = result.bounds()
        if bounds is not None:
            self.rows += result.rows
            low, high = bounds
            self.first = low if self.first is None else min(self.first, low)
            self.last = high if self.last is None else max(self.last, high)


@lru_cache(maxsize=_HASH_CACHE)
def split_hex(value: str | None) -> tuple[bytes | None, str | None]:
    """``(hash, hash_text)``: the bytes of a lower-case hex hash, or the text as sent."""
    if value is None or len(value) % 2:
        return None, value
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return None, value
    return (raw, None) if raw.hex() == value else (None, value)


_STATE = (
    "SELECT id, name, status, offset_bytes, books_offset, books_first_at, books_last_at"
    " FROM wal_segments"
)


def lock_books(conn: psycopg.Connection, segment_id: int) -> BookState:
    """Lock the segment's row until the transaction ends; return its book progress."""
    row = conn.execute(f"{_STATE} WHERE id = %s FOR UPDATE", (segment_id,)).fetchone()
    assert row is not None, f"segment id {segment_id} vanished"
    return BookState(*row)


def behind(conn: psycopg.Connection) -> list[BookState]:
    """Segments done loading trades whose book rows are not all loaded (for backfill)."""
    rows = conn.execute(
        f"{_STATE} WHERE status <> 'loading' AND books_offset < offset_bytes ORDER BY name"
    ).fetchall()
    return [BookState(*row) for row in rows]


def copy_books(
    conn: psycopg.Connection, segment_id: int, keys: KeyBook, result: BookResult
) -> None:
    """COPY the rows of ``result`` into the book tables; new token keys after them."""
    known, pending = keys.known, keys.pending
    fresh: dict[tuple[str, str], int] = {}

    def key(token_id: str, market: str) -> int:
        k = token_key(token_id, market)
        if k not in known and (token_id, market) not in pending:
            fresh[(token_id, market)] = k
        return k

    with conn.cursor() as cur:
        _copy(cur, "book_snapshot_rows", _snapshots(result, segment_id, key))
        copy_changes(cur, result, segment_id, key)
        for pair, k in result.copied.pairs():
            if k not in known and pair not in pending:
                fresh[pair] = k
        _copy(
            cur,
            "best_bid_ask_rows",
            ((*r[:1], key(r.token_id, r.market), *r[3:], segment_id) for r in result.quotes),
        )
        if result.copied.quote_rows:
            _copy_bytes(cur, bookcopy.QUOTE_STATEMENT, result.copied.quotes)
        _copy(
            cur,
            "tick_size_change_rows",
            ((*r[:1], key(r.token_id, r.market), *r[3:], segment_id) for r in result.ticks),
        )
        if fresh:
            write_token_keys(cur, fresh)
            pending.update(fresh)


class ChangeStream:
    """A COPY into price_change_rows held open across zstd frames, so the server inserts
    the rows of one frame while the next is parsed (price changes are most book rows; the
    others are buffered for :func:`copy_books`). New token keys follow at :meth:`close`.
    An exception inside ``with`` aborts the COPY, and so the transaction."""

    def __init__(self, conn: psycopg.Connection, segment_id: int, keys: KeyBook) -> None:
        self._conn, self._segment_id, self._keys = conn, segment_id, keys
        self._stack = ExitStack()
        self._cur: psycopg.Cursor[Any] | None = None
        self._copy: Any = None
        self._tokens: dict[str, tuple[str, int]] = {}  # token id -> (market, key)
        self._fresh: dict[tuple[str, str], int] = {}

    def write(self, result: BookResult) -> None:
        """COPY the price changes of ``result``: its rows and its COPY rows."""
        copied = result.copied
        if not result.changes and not copied.change_rows:
            return
        data = bytearray()
        if self._copy is None:
            self._cur = self._conn.cursor()
            self._copy = self._stack.enter_context(self._cur.copy(bookcopy.CHANGE_STATEMENT))
            data += bookcopy.SIGNATURE
        bookcopy.encode_changes(
            _change_rows(result.changes, self._segment_id, self._key, self._tokens),
            data,
            self._conn.info.encoding,
        )
        data += copied.changes
        self._copy.write(data)
        known, pending, fresh = self._keys.known, self._keys.pending, self._fresh
        for pair, k in copied.pairs():
            if k not in known and pair not in pending:
                fresh[pair] = k

    def close(self) -> None:
        """End the COPY (if one is open) and write the new token keys after it."""
        if self._cur is None:
            return
        cur, self._cur = self._cur, None
        self._copy.write(bookcopy.TRAILER)
        self._copy = None
        self._stack.close()
        if self._fresh:
            write_token_keys(cur, self._fresh)
            self._keys.pending.update(self._fresh)
            self._fresh = {}
        cur.close()

    def __enter__(self) -> ChangeStream:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if exc_info[0] is None:
            self.close()
        else:
            self._cur, self._copy = None, None
            self._stack.__exit__(*exc_info)

    def _key(self, token_id: str, market: str) -> int:
        k = token_key(token_id, market)
        if k not in self._keys.known and (token_id, market) not in self._keys.pending:
            self._fresh[(token_id, market)] = k
        return k


def copy_changes(cur: psycopg.Cursor[Any], result: BookResult, segment_id: int, key: Any) -> None:
    """One COPY of the price changes of ``result`` (rows and COPY rows), if it has any."""
    if not result.changes and not result.copied.change_rows:
        return
    data = bytearray()
    rows = _change_rows(result.changes, segment_id, key, {})
    bookcopy.encode_changes(rows, data, cur.connection.info.encoding)
    _copy_bytes(cur, bookcopy.CHANGE_STATEMENT, data + result.copied.changes)


def _copy_bytes(cur: psycopg.Cursor[Any], statement: str, rows: bytearray) -> None:
    """One binary COPY of rows already encoded."""
    with cur.copy(statement) as copy:
        copy.write(bookcopy.SIGNATURE + rows + bookcopy.TRAILER)


def _snapshots(result: BookResult, segment_id: int, key: Any) -> Iterable[tuple[Any, ...]]:
    for r in result.snapshots:
        raw, text = split_hex(r.hash)
        yield (
            r.ts,
            key(r.token_id, r.market),
            r.received_at,
            segment_id,
            r.bids_price,
            r.bids_size,
            r.asks_price,
            r.asks_size,
            raw,
            text,
        )


def _change_rows(
    changes: list[ChangeRow], segment_id: int, key: Any, keys: dict[str, tuple[str, int]]
) -> Iterable[tuple[Any, ...]]:
    """Storage rows of price changes (most book rows: no per-row cache of hashes, which
    are an order's and so all distinct; ``keys`` holds each token's (market, key))."""
    fromhex = bytes.fromhex
    for ts, token_id, market, side, price, size, bid, ask, hsh, received in changes:
        known = keys.get(token_id)
        if known is None or known[0] != market:
            known = keys[token_id] = (market, key(token_id, market))
        raw, text = None, hsh
        if hsh is not None and not len(hsh) % 2:
            try:
                raw = fromhex(hsh)
            except ValueError:
                pass
            else:
                if raw.hex() == hsh:
                    text = None
                else:
                    raw = None
        yield (ts, known[1], price, size, bid, ask, received, segment_id, side == "BUY", raw, text)


def _copy(cur: psycopg.Cursor[Any], table: str, rows: Iterable[tuple[Any, ...]]) -> None:
    iterator = iter(rows)
    first = next(iterator, None)
    if first is None:
        return
    with _table_copy(cur, table) as write_row:
        write_row(first)
        for row in iterator:
            write_row(row)


@contextmanager
def _table_copy(cur: psycopg.Cursor[Any], table: str) -> Iterator[Callable[[Any], None]]:
    """A binary COPY into ``table``; yields its ``write_row``."""
    columns = _COLUMNS[table]
    names = ", ".join(name for name, _ in columns)
    statement = f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)"
    with binary_copy(cur, statement, [kind for _, kind in columns]) as copy:
        yield copy.write_row


def record_books(conn: psycopg.Connection, segment_id: int, pending: BookPending) -> None:
    """Move the segment's ``books_offset`` to ``pending.end`` and add its counts."""
    conn.execute(
        """UPDATE wal_segments SET books_offset = %(end)s, book_rows = book_rows + %(rows)s,
            book_errors = book_errors + %(errors)s,
            books_first_at = LEAST(books_first_at, %(first)s),
            books_last_at = GREATEST(books_last_at, %(last)s), updated_at = now()
           WHERE id = %(id)s""",
        {
            "id": segment_id,
            "end": pending.end,
            "rows": pending.rows,
            "errors": pending.errors,
            "first": pending.first,
            "last": pending.last,
        },
    )


def reset_books(conn: psycopg.Connection, state: BookState) -> int:
    """Delete the segment's book rows and zero its book progress (reparse).

    Bounded by the segment's first/last book event time as literals, for the reason
    :func:`loader.store.reset_segment` gives. Returns rows deleted.
    """
    deleted = 0
    if state.books_first_at is not None and state.books_last_at is not None:
        conn.execute("SELECT set_config(%s, '0', true)", (_DECOMPRESS_LIMIT,))
        for table in BOOK_TABLES:
            query = sql.SQL("DELETE FROM {} WHERE segment_id = {} AND ts BETWEEN {} AND {}").format(
                sql.Identifier(table),
                sql.Literal(state.id),
                sql.Literal(state.books_first_at),
                sql.Literal(state.books_last_at),
            )
            deleted += conn.execute(query, prepare=False).rowcount
    conn.execute(
        "UPDATE wal_segments SET books_offset = 0, book_rows = 0, book_errors = 0,"
        " books_first_at = NULL, books_last_at = NULL WHERE id = %s",
        (state.id,),
    )
    return deleted
