"""Order-book parsing: WAL lines in, book rows (and the trades) out. Pure: no I/O, no clock.

With ``--books`` the loader reads every event of every frame, not only trades
(:mod:`loader.bookscan` decodes each line once and hands each event to the trade parser
and to :func:`parse_book_event`). Book events are ``book`` (a snapshot), ``price_change``
(absolute sizes per level; the format since 2025-09 has ``price_changes`` entries with
their own ``asset_id`` and best bid/ask, the older one a top-level ``asset_id`` with
``changes``, or a single change in the event itself), ``best_bid_ask`` and
``tick_size_change``. An event that is one of these but cannot be read is a
:class:`~loader.parse.ParseError` value (one per bad entry of a price change, whose
other entries still load), counted and logged like an invalid trade.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from loader import parse, values
from loader.bookcopy import BookCopy
from loader.parse import ParseError
from loader.values import InvalidTrade

BOOK_EVENT = "book"
PRICE_CHANGE_EVENT = "price_change"
BEST_BID_ASK_EVENT = "best_bid_ask"
TICK_SIZE_EVENT = "tick_size_change"
BOOK_EVENTS = frozenset({BOOK_EVENT, PRICE_CHANGE_EVENT, BEST_BID_ASK_EVENT, TICK_SIZE_EVENT})
# A real book has at most a few hundred levels per side (tick 0.001: 999 prices); more
# than this is not a book, and would make one row absurdly large.
MAX_LEVELS = 2_000


class SnapshotRow(NamedTuple):
    """One ``book_snapshots`` row (best level first on each side)."""

    ts: datetime
    token_id: str
    market: str
    bids_price: list[float]
    bids_size: list[float]
    asks_price: list[float]
    asks_size: list[float]
    hash: str | None
    received_at: datetime | None


class ChangeRow(NamedTuple):
    """One ``price_changes`` row: ``size`` is the new total at ``price`` (0 removes it)."""

    ts: datetime
    token_id: str
    market: str
    side: str
    price: float
    size: float
    best_bid: float | None
    best_ask: float | None
    hash: str | None
    received_at: datetime | None


class QuoteRow(NamedTuple):
    """One ``best_bid_ask`` row."""

    ts: datetime
    token_id: str
    market: str
    best_bid: float | None
    best_ask: float | None
    spread: float | None
    received_at: datetime | None


class TickRow(NamedTuple):
    """One ``tick_size_changes`` row."""

    ts: datetime
    token_id: str
    market: str
    old_tick_size: float | None
    new_tick_size: float
    received_at: datetime | None


@dataclass
class BookResult:
    """The book rows of some WAL lines, and the book events that were invalid. Price
    changes and best bid/asks are rows in ``changes`` and ``quotes``, or already COPY
    rows in ``copied`` (loader.bookcopy), or both."""

    snapshots: list[SnapshotRow] = field(default_factory=list)
    changes: list[ChangeRow] = field(default_factory=list)
    quotes: list[QuoteRow] = field(default_factory=list)
    ticks: list[TickRow] = field(default_factory=list)
    errors: list[ParseError] = field(default_factory=list)
    copied: BookCopy = field(default_factory=BookCopy)

    @property
    def rows(self) -> int:
        return (
            len(self.snapshots)
            + len(self.changes)
            + len(self.quotes)
            + len(self.ticks)
            + self.copied.rows
        )

    def extend(self, other: BookResult) -> None:
        self.snapshots.extend(other.snapshots)
        self.changes.extend(other.changes)
        self.quotes.extend(other.quotes)
        self.ticks.extend(other.ticks)
        self.errors.extend(other.errors)
        self.copied.extend(other.copied)

    def drop_changes(self) -> None:
        """Forget the price changes (streamed already); the other rows stay."""
        self.changes = []
        self.copied.drop_changes()

    def bounds(self) -> tuple[datetime, datetime] | None:
        """The least and greatest event time of the rows (they bound a reparse's DELETE),
        or None without rows."""
        times = [
            row.ts
            for rows in (self.snapshots, self.changes, self.quotes, self.ticks)
            for row in rows
        ]
        copied = self.copied
        if copied.first_ms is not None and copied.last_ms is not None:
            times += (values.from_ms(copied.first_ms), values.from_ms(copied.last_ms))
        return (min(times), max(times)) if times else None


def parse_book_event(
    event: dict[str, Any], into: BookResult, *, received_ns: int | None = None
) -> list[str]:
    """Add the rows of one event to ``into``; return why entries were refused (if any).

    Events of other types add nothing. Raises nothing for bad input.
    """
    kind = event.get("event_type")
    if not isinstance(kind, str) or kind not in BOOK_EVENTS:
        return []
    try:
        received = None if received_ns is None else values.received_at(received_ns)
        ts = values.timestamp(event.get("timestamp"))
        if kind == PRICE_CHANGE_EVENT:
            return _price_changes(event, ts, received, into.changes)
        token, market = _ids(event)
        if kind == BOOK_EVENT:
            into.snapshots.append(_snapshot(event, ts, token, market, received))
        elif kind == BEST_BID_ASK_EVENT:
            into.quotes.append(
                QuoteRow(
                    ts,
                    token,
                    market,
                    _price_or_none(event, "best_bid"),
                    _price_or_none(event, "best_ask"),
                    _optional_number(event, "spread"),
                    received,
                )
            )
        else:
            into.ticks.append(
                TickRow(
                    ts,
                    token,
                    market,
                    _optional_number(event, "old_tick_size"),
                    _positive(event, "new_tick_size"),
                    received,
                )
            )
    except InvalidTrade as exc:
        return [f"{kind}: {exc.reason}"]
    return []


def parse_books(record: dict[str, Any], *, segment: str = "", offset: int = 0) -> BookResult:
    """The book rows in one ``frame`` record."""
    result = BookResult()
    for event in parse._events(record):
        add_event(event, record.get("ts_ns"), result, segment, offset)
    return result


def add_event(
    event: dict[str, Any], received_ns: Any, into: BookResult, segment: str, offset: int
) -> None:
    """Add the rows of one event to ``into``, and a ParseError per refused entry."""
    for reason in parse_book_event(event, into, received_ns=received_ns):
        into.errors.append(ParseError(reason, segment, offset, values.short(event, 200)))


def _ids(event: dict[str, Any]) -> tuple[str, str]:
    return values.text(event, "asset_id"), values.text(event, "market")


def _snapshot(
    event: dict[str, Any], ts: datetime, token: str, market: str, received: datetime | None
) -> SnapshotRow:
    bids = _levels(event, "bids")
    asks = _levels(event, "asks")
    bids.sort(key=lambda level: -level[0])
    asks.sort()
    return SnapshotRow(
        ts,
        token,
        market,
        [p for p, _ in bids],
        [s for _, s in bids],
        [p for p, _ in asks],
        [s for _, s in asks],
        values.optional_text(event, "hash"),
        received,
    )


def _levels(event: dict[str, Any], name: str) -> list[tuple[float, float]]:
    levels = event.get(name)
    if not isinstance(levels, list):
        raise InvalidTrade(f"{name} is not a list of levels")
    if len(levels) > MAX_LEVELS:
        raise InvalidTrade(f"{name} has {len(levels)} levels, more than {MAX_LEVELS}")
    out = []
    for level in levels:
        if not isinstance(level, dict):
            raise InvalidTrade(f"a level of {name} is not an object")
        out.append((_price(level, "price"), _size(level, "size")))
    return out


def _price_changes(
    event: dict[str, Any], ts: datetime, received: datetime | None, into: list[ChangeRow]
) -> list[str]:
    """Rows of either price_change format; one reason per entry that was refused."""
    market = values.text(event, "market")
    entries = event.get("price_changes")
    if entries is None and "changes" in event:
        token = values.text(event, "asset_id")
        entries = [dict(change, asset_id=token, hash=event.get("hash")) for change in _list(event)]
        quoted = False
    elif entries is None and "asset_id" in event:
        entries, quoted = [event], False  # the oldest form: one change in the event itself
    else:
        if not isinstance(entries, list):
            raise InvalidTrade("price_changes is not a list")
        quoted = True
    reasons = []
    for entry in entries:
        try:
            if not isinstance(entry, dict):
                raise InvalidTrade("an entry is not an object")
            into.append(_change(entry, ts, market, received, quoted=quoted))
        except InvalidTrade as exc:
            reasons.append(f"price_change: {exc.reason}")
    return reasons


def _list(event: dict[str, Any]) -> list[dict[str, Any]]:
    changes = event.get("changes")
    if not isinstance(changes, list) or not all(isinstance(c, dict) for c in changes):
        raise InvalidTrade("changes is not a list of objects")
    return changes


def _change(
    entry: dict[str, Any], ts: datetime, market: str, received: datetime | None, *, quoted: bool
) -> ChangeRow:
    side = entry.get("side")
    if not isinstance(side, str) or side not in parse.SIDES:
        raise InvalidTrade(f"side {values.short(side)} is not BUY or SELL")
    return ChangeRow(
        ts,
        values.text(entry, "asset_id"),
        market,
        side,
        _price(entry, "price"),
        _size(entry, "size"),
        _price_or_none(entry, "best_bid") if quoted else None,
        _price_or_none(entry, "best_ask") if quoted else None,
        values.optional_text(entry, "hash"),
        received,
    )


def _price(event: dict[str, Any], name: str) -> float:
    price = values.number(event, name)
    if not 0.0 <= price <= 1.0:
        raise InvalidTrade(f"{name} {price!r} is outside [0, 1]")
    return price


def _price_or_none(event: dict[str, Any], name: str) -> float | None:
    if event.get(name) in (None, ""):
        return None
    return _price(event, name)


def _size(event: dict[str, Any], name: str) -> float:
    size = values.number(event, name)
    if size < 0.0:
        raise InvalidTrade(f"{name} {size!r} is negative")
    return size


def _positive(event: dict[str, Any], name: str) -> float:
    value = values.number(event, name)
    if value <= 0.0:
        raise InvalidTrade(f"{name} {value!r} is not positive")
    return value


def _optional_number(event: dict[str, Any], name: str) -> float | None:
    if event.get(name) in (None, ""):
        return None
    return values.number(event, name)
