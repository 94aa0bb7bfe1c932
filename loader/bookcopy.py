"""Price-change rows as price_change_rows' binary COPY bytes. Pure: values in, bytes out.

Price changes are most book rows, so with the C build (loader._scan) the feed-shaped
ones, and best bid/asks, go from a batch's bytes to COPY rows in one call, no Python
object per row (:func:`loader.bookscan.scan_books` with a ``segment_id``), kept in a
:class:`BookCopy`. The other price changes are encoded here (:func:`encode_changes`), the
same format byte for byte, so one COPY takes both; tests/loader/test_bookcopy.py holds
both encodings to the bytes psycopg's own binary dumpers give.

The format is PostgreSQL's binary COPY: a signature, then per row a 16-bit field count
and each field as a 32-bit length (-1 for NULL) and its bytes, big-endian; timestamps
are microseconds since 2000-01-01 UTC.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

# The storage columns of price_change_rows and best_bid_ask_rows, in the order of every
# COPY into them.
CHANGE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ts", "timestamptz"),
    ("token", "int8"),
    ("price", "float8"),
    ("size", "float8"),
    ("best_bid", "float8"),
    ("best_ask", "float8"),
    ("received_at", "timestamptz"),
    ("segment_id", "int8"),
    ("buy", "bool"),
    ("hash", "bytea"),
    ("hash_text", "text"),
)
QUOTE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ts", "timestamptz"),
    ("token", "int8"),
    ("best_bid", "float8"),
    ("best_ask", "float8"),
    ("spread", "float8"),
    ("received_at", "timestamptz"),
    ("segment_id", "int8"),
)


def statement(table: str, columns: tuple[tuple[str, str], ...]) -> str:
    """The binary COPY into ``table`` of ``columns``."""
    return f"COPY {table} ({', '.join(name for name, _ in columns)}) FROM STDIN (FORMAT BINARY)"


CHANGE_STATEMENT = statement("price_change_rows", CHANGE_COLUMNS)
QUOTE_STATEMENT = statement("best_bid_ask_rows", QUOTE_COLUMNS)
SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # no flags, no header extension
TRAILER = b"\xff\xff"
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_NULL = struct.pack("!i", -1)
_HEAD = struct.Struct("!hiqiqidid")  # field count; ts, token, price, size
_ROW = struct.Struct("!hiqiqididididiqiqi?")  # ... to buy, no NULL among them
_INT8 = struct.Struct("!iq")
_FLOAT8 = struct.Struct("!id")
_LENGTH = struct.Struct("!i")
_BUY, _SELL = b"\x00\x00\x00\x01\x01", b"\x00\x00\x00\x01\x00"


def encode_changes(rows: Iterable[tuple[Any, ...]], out: bytearray, encoding: str = "utf-8") -> int:
    """Append the COPY rows of storage rows (``loader.bookstore``'s: ts, token key, price,
    size, best bid, best ask, received_at, segment id, buy, hash bytes, hash text) to
    ``out``, texts in the connection's ``encoding`` (a Python codec name, as psycopg's
    ``conn.info.encoding``); the number of rows."""
    count = 0
    pack_row, pack_length, null = _ROW.pack, _LENGTH.pack, _NULL
    last_ts = last_received = None
    ts_us = received_us = 0
    for ts, token, price, size, bid, ask, received, segment_id, buy, raw, text in rows:
        if ts is not last_ts:  # rows of one event share their times
            last_ts, ts_us = ts, (ts - _PG_EPOCH) // _US
        if received is not last_received and received is not None:
            last_received, received_us = received, (received - _PG_EPOCH) // _US
        if bid is not None and ask is not None and received is not None:
            out += pack_row(
                11, 8, ts_us, 8, token, 8, price, 8, size, 8, bid, 8, ask, 8, received_us,
                8, segment_id, 1, buy,
            )  # fmt: skip
        else:
            out += _HEAD.pack(11, 8, ts_us, 8, token, 8, price, 8, size)
            out += null if bid is None else _FLOAT8.pack(8, bid)
            out += null if ask is None else _FLOAT8.pack(8, ask)
            out += null if received is None else _INT8.pack(8, received_us)
            out += _INT8.pack(8, segment_id)
            out += _BUY if buy else _SELL
        if raw is not None and text is None:
            out += pack_length(len(raw))
            out += raw
            out += null
        else:
            for value in (raw, None if text is None else text.encode(encoding)):
                if value is None:
                    out += null
                else:
                    out += pack_length(len(value))
                    out += value
        count += 1
    return count


@dataclass
class BookCopy:
    """Book rows already encoded as COPY rows (no signature): price changes (``changes``,
    price_change_rows) and best bid/asks (``quotes``, best_bid_ask_rows), with what the
    load needs of them: how many, the bounds of their event times (epoch ms), and each
    token's (market, key) (``keys``: token id -> pair, as loader._scan fills it; the pairs
    of merged copies are kept too, so a token seen with two markets keeps both)."""

    changes: bytearray = field(default_factory=bytearray)
    quotes: bytearray = field(default_factory=bytearray)
    change_rows: int = 0
    quote_rows: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    keys: dict[str, tuple[str, int]] = field(default_factory=dict)
    _merged: list[dict[str, tuple[str, int]]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return self.change_rows + self.quote_rows

    def add(
        self, change_rows: int, quote_rows: int, first_ms: int | None, last_ms: int | None
    ) -> None:
        """Count rows more, whose event times lie within the bounds given."""
        self.change_rows += change_rows
        self.quote_rows += quote_rows
        if first_ms is not None and last_ms is not None:
            self.first_ms = first_ms if self.first_ms is None else min(self.first_ms, first_ms)
            self.last_ms = last_ms if self.last_ms is None else max(self.last_ms, last_ms)

    def extend(self, other: BookCopy) -> None:
        self.changes += other.changes
        self.quotes += other.quotes
        self.add(other.change_rows, other.quote_rows, other.first_ms, other.last_ms)
        self._merged.append(other.keys)
        self._merged.extend(other._merged)

    def drop_changes(self) -> None:
        """Forget the price changes (streamed already); the rest stays."""
        self.changes, self.change_rows = bytearray(), 0

    def pairs(self) -> Iterator[tuple[tuple[str, str], int]]:
        """``((token id, market), key)`` of every token of these rows (repeats allowed)."""
        for keys in (self.keys, *self._merged):
            for token_id, (market, key) in keys.items():
                yield (token_id, market), key
