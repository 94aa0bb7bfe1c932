"""The book of a token at a moment (``loader book``), from the SQL function ``book_at``.

The replay itself (last snapshot at or before the time, every price change after it
applied, absolute sizes, 0 deletes) lives in one place, ``book_at`` in the database
(:mod:`loader.bookschema`), so SQL users and this command get the same book. This module
reads it and renders it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from loader.errors import LoaderError


class NoBookError(LoaderError):
    """No snapshot of the token at or before the time asked for."""


@dataclass
class BookAt:
    """Levels best first: ``bids`` by price descending, ``asks`` ascending."""

    token_id: str
    at: datetime
    snapshot_ts: datetime
    snapshot_received_at: datetime
    changes_applied: int
    bids: list[tuple[float, float]] = field(default_factory=list)
    asks: list[tuple[float, float]] = field(default_factory=list)

    @property
    def best_bid(self) -> float | None:
        return self.bids[0][0] if self.bids else None

    @property
    def best_ask(self) -> float | None:
        return self.asks[0][0] if self.asks else None

    def to_dict(self, depth: int | None = None) -> dict[str, Any]:
        return {
            "token_id": self.token_id,
            "at": self.at.isoformat(),
            "snapshot_ts": self.snapshot_ts.isoformat(),
            "snapshot_received_at": self.snapshot_received_at.isoformat(),
            "changes_applied": self.changes_applied,
            "best_bid": self.best_bid,
            "best_ask": self.best_ask,
            "bids": [list(level) for level in self.bids[:depth]],
            "asks": [list(level) for level in self.asks[:depth]],
        }


def parse_time(text: str) -> datetime:
    """ISO 8601 (UTC when no offset is given) or epoch milliseconds. ValueError if neither."""
    value = text.strip()
    if value.isdigit():
        if len(value) <= 11:  # before 1973 in milliseconds: surely seconds, or a typo
            raise ValueError(f"{value} looks like epoch seconds; give milliseconds")
        return datetime.fromtimestamp(int(value) / 1000, UTC)
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def book_at(conn: psycopg.Connection, token_id: str, at: datetime) -> BookAt:
    """The book of ``token_id`` at ``at``; NoBookError when no snapshot precedes it."""
    rows = conn.execute("SELECT * FROM book_at(%s, %s)", (token_id, at)).fetchall()
    if rows:
        _side, _price, _size, snap_ts, snap_received, applied = rows[0]
    else:  # an empty book, or none at all
        found = conn.execute(
            "SELECT s.ts, s.received_at FROM book_snapshot_rows s"
            " JOIN token_keys k ON k.id = s.token"
            " WHERE k.token_id = %s AND s.ts <= %s ORDER BY s.ts DESC, s.received_at DESC"
            " LIMIT 1",
            (token_id, at),
        ).fetchone()
        if found is None:
            loaded = conn.execute("SELECT EXISTS (SELECT FROM book_snapshot_rows)").fetchone()
            hint = (
                "" if loaded and loaded[0] else " (book tables are loaded by `loader run --books`)"
            )
            raise NoBookError(
                f"no book snapshot of token {token_id} at or before {at.isoformat()}{hint}"
            )
        snap_ts, snap_received, applied = found[0], found[1], 0
    book = BookAt(token_id, at, snap_ts, snap_received, int(applied))
    for side, price, size, *_ in rows:
        (book.bids if side == "BUY" else book.asks).append((price, size))
    return book


def render(book: BookAt, depth: int | None = None) -> str:
    """The book as text: a header, best bid/ask, then bid and ask levels side by side."""
    lines = [
        f"token        {book.token_id}",
        f"at           {book.at.isoformat()}",
        f"snapshot     {book.snapshot_ts.isoformat()} (received "
        f"{book.snapshot_received_at.isoformat()}), {book.changes_applied} changes applied",
        f"best bid/ask {_fmt(book.best_bid)} / {_fmt(book.best_ask)}",
        f"{'bid size':>14} {'bid':>8} | {'ask':<8} {'ask size':<14}",
    ]
    bids, asks = book.bids[:depth], book.asks[:depth]
    for i in range(max(len(bids), len(asks))):
        left = f"{bids[i][1]:>14g} {bids[i][0]:>8g}" if i < len(bids) else " " * 23
        right = f"{asks[i][0]:<8g} {asks[i][1]:<14g}" if i < len(asks) else ""
        lines.append(f"{left} | {right}".rstrip())
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"
