"""Order-book parsing: WAL lines in, book rows (and the trades) out. Pure: no I/O, no clock.

With ``--books`` the loader reads every event of every frame, not only trades, so
:func:`scan_books` decodes each line once and hands each event to the trade parser and
to :func:`parse_book_event`. Book events are ``book`` (a snapshot), ``price_change``
(absolute sizes per level; the format since 2025-09 has ``price_changes`` entries with
their own ``asset_id`` and best bid/ask, the older one a top-level ``asset_id`` with
``changes``, or a single change in the event itself), ``best_bid_ask`` and
``tick_size_change``. An event that is one of these but cannot be read is a
:class:`~loader.parse.ParseError` value (one per bad entry of a price change, whose
other entries still load), counted and logged like an invalid trade.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from loader import parse
from loader.parse import BatchResult, InvalidTrade, ParseError

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
    """The book rows of some WAL lines, and the book events that were invalid."""

    snapshots: list[SnapshotRow] = field(default_factory=list)
    changes: list[ChangeRow] = field(default_factory=list)
    quotes: list[QuoteRow] = field(default_factory=list)
    ticks: list[TickRow] = field(default_factory=list)
    errors: list[ParseError] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.snapshots) + len(self.changes) + len(self.quotes) + len(self.ticks)

    def extend(self, other: BookResult) -> None:
        self.snapshots.extend(other.snapshots)
        self.changes.extend(other.changes)
        self.quotes.extend(other.quotes)
        self.ticks.extend(other.ticks)
        self.errors.extend(other.errors)

    def times(self) -> list[datetime]:
        """The event time of every row (bounds a reparse's DELETE)."""
        return [
            row.ts
            for rows in (self.snapshots, self.changes, self.quotes, self.ticks)
            for row in rows
        ]


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
        received = None if received_ns is None else parse._received_at(received_ns)
        ts = parse._timestamp(event.get("timestamp"))
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
        _add_event(event, record.get("ts_ns"), result, segment, offset)
    return result


def scan_books(
    batch: bytes | Sequence[bytes], *, segment: str = "", offset: int = 0
) -> tuple[BatchResult, BookResult]:
    """Parse one zstd frame's records into trades and book rows, decoding each line once.

    The trades, errors and counts are those :func:`loader.parse.scan_batch` gives for the
    same bytes. Raises ValueError on a line that is no record.
    """
    data = batch if isinstance(batch, bytes) else b"".join(line + b"\n" for line in batch)
    if data and not data.endswith(b"\n"):
        raise ValueError("a batch is whole lines, each ending in a newline")
    trades, books = BatchResult(), BookResult()
    parse_trade, add_event, fast = parse.parse_trade_event, _add_event, fast_price_changes
    for line in data.split(b"\n")[:-1] if data else []:
        trades.records += 1
        record = parse._decode_record(line)
        if record["type"] != "frame":
            trades.others.append((len(trades.rows), record))  # for coverage, as scan_batch
            continue
        trades.frames += 1
        received_ns = record.get("ts_ns")
        received = _received_or_bad(received_ns)
        first = len(trades.rows)
        for event in parse._events(record):
            kind = event.get("event_type")
            if kind == PRICE_CHANGE_EVENT and received is not _BAD:
                if not fast(event, received, books.changes):
                    add_event(event, received_ns, books, segment, offset)
            elif kind == parse.TRADE_EVENT:
                try:
                    row = parse_trade(event, received_ns=received_ns)
                except InvalidTrade as exc:
                    trades.errors.append(
                        ParseError(exc.reason, segment, offset, parse._short(event, 200))
                    )
                    continue
                if row is not None:
                    trades.rows.append(row)
            elif isinstance(kind, str) and kind in BOOK_EVENTS:
                add_event(event, received_ns, books, segment, offset)
        if len(trades.rows) > first:
            trades.sources.append((first, record.get("conn", -1), record.get("ts_ns", 0)))
    trades.last_frame_ns = parse._last_frame_ns(data)
    return trades, books


def fast_price_changes(
    event: dict[str, Any], received: datetime | None, into: list[ChangeRow]
) -> bool:
    """Add the rows of a price_change of the current format whose entries are all valid,
    as :func:`parse_book_event` would; False (nothing added) for any other event.

    The fast path for most of a book-heavy feed: each distinct value text is checked once,
    by the same helpers, and its value kept; ``received`` is the record's, computed once.
    """
    try:
        entries, market = event["price_changes"], event["market"]
        if type(entries) is not list:
            return False
        if market not in _IDS:
            _learn_id(market)
        ts = _event_time(event.get("timestamp"))
        prices, sizes, quotes, ids = _PRICES, _SIZES, _QUOTES, _IDS
        new, rows = tuple.__new__, []
        for entry in entries:
            if type(entry) is not dict:
                return False
            token, side, hsh = entry["asset_id"], entry["side"], entry.get("hash")
            if token not in ids:
                _learn_id(token)
            if side != "BUY" and side != "SELL":
                return False
            if hsh is not None and not (
                type(hsh) is str and 0 < len(hsh) <= MAX_TEXT and hsh.isascii() and NUL not in hsh
            ):  # not a text parse._optional_text gives back as it is: ask it
                hsh = parse._optional_text(entry, "hash")
            price = prices.get(entry["price"])
            if price is None:
                price = _learn(prices, entry["price"], _price)
            size = sizes.get(entry["size"])
            if size is None:
                size = _learn(sizes, entry["size"], _size)
            bid = quotes.get(entry["best_bid"], _MISSING)
            if bid is _MISSING:
                bid = _learn(quotes, entry["best_bid"], _price_or_none)
            ask = quotes.get(entry["best_ask"], _MISSING)
            if ask is _MISSING:
                ask = _learn(quotes, entry["best_ask"], _price_or_none)
            row = (ts, token, market, side, price, size, bid, ask, hsh, received)
            rows.append(new(ChangeRow, row))
    except (KeyError, TypeError, InvalidTrade):
        return False
    into.extend(rows)
    return True


# The fast path's checked values by text: a feed has a few hundred distinct prices and a
# few thousand sizes; past this many the cache starts over.
MAX_CACHED_VALUES = 1 << 14
_PRICES: dict[str, float] = {}
_SIZES: dict[str, float] = {}
_QUOTES: dict[str, float | None] = {}  # best bid/ask: may be ""
_MISSING = object()
_IDS: set[str] = set()  # token and market ids that parse._text accepted
_SECONDS: dict[int, datetime] = {}  # epoch second -> its datetime
_MILLIS = [timedelta(milliseconds=ms) for ms in range(1000)]
_MICROS = [timedelta(microseconds=us) for us in range(1000)]
_MIN_NS, _MAX_NS = parse.MIN_TIME_MS * 1_000_000, parse.MAX_TIME_MS * 1_000_000
_BAD = object()  # a record ts_ns that parse._received_at refuses
MAX_TEXT, NUL = parse.MAX_TEXT_CHARS, "\x00"


def _learn(cache: dict[str, Any], value: Any, check: Any) -> Any:
    """``check`` the text ``value`` as the reference does and remember its value (a
    TypeError for anything but a string, so such values take the reference path)."""
    if type(value) is not str:
        raise TypeError("only texts are cached")
    if len(cache) >= MAX_CACHED_VALUES:
        cache.clear()
    number = check({"v": value}, "v")
    cache[value] = number
    return number


def _learn_id(value: Any) -> None:
    if type(value) is not str:
        raise TypeError("only texts are cached")
    if len(_IDS) >= MAX_CACHED_VALUES:
        _IDS.clear()
    _IDS.add(parse._text({"v": value}, "v"))


def _event_time(value: Any) -> datetime:
    """``parse._timestamp(value)``; for 13 ASCII digits, from the datetime of its second."""
    if type(value) is str and len(value) == 13 and value.isascii() and value.isdigit():
        ms = int(value)
        if parse.MIN_TIME_MS <= ms <= parse.MAX_TIME_MS:
            return _second(ms // 1000) + _MILLIS[ms % 1000]
    return parse._timestamp(value)


def _received_or_bad(received_ns: Any) -> Any:
    """``parse._received_at(received_ns)``, None for None, _BAD where it raises; from the
    datetime of the second (the record's receive time is a new datetime per frame)."""
    if type(received_ns) is int and _MIN_NS <= received_ns <= _MAX_NS:
        us = received_ns // 1000
        return _second(us // 1_000_000) + _MILLIS[us // 1000 % 1000] + _MICROS[us % 1000]
    if received_ns is None:
        return None
    try:
        return parse._received_at(received_ns)
    except InvalidTrade:
        return _BAD


def _second(epoch_s: int) -> datetime:
    second = _SECONDS.get(epoch_s)
    if second is None:
        if len(_SECONDS) >= MAX_CACHED_VALUES:
            _SECONDS.clear()
        second = _SECONDS[epoch_s] = parse._EPOCH + timedelta(0, epoch_s)
    return second


def _add_event(
    event: dict[str, Any], received_ns: Any, into: BookResult, segment: str, offset: int
) -> None:
    for reason in parse_book_event(event, into, received_ns=received_ns):
        into.errors.append(ParseError(reason, segment, offset, parse._short(event, 200)))


def _ids(event: dict[str, Any]) -> tuple[str, str]:
    return parse._text(event, "asset_id"), parse._text(event, "market")


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
        parse._optional_text(event, "hash"),
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
    market = parse._text(event, "market")
    entries = event.get("price_changes")
    if entries is None and "changes" in event:
        token = parse._text(event, "asset_id")
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
        raise InvalidTrade(f"side {parse._short(side)} is not BUY or SELL")
    return ChangeRow(
        ts,
        parse._text(entry, "asset_id"),
        market,
        side,
        _price(entry, "price"),
        _size(entry, "size"),
        _price_or_none(entry, "best_bid") if quoted else None,
        _price_or_none(entry, "best_ask") if quoted else None,
        parse._optional_text(entry, "hash"),
        received,
    )


def _price(event: dict[str, Any], name: str) -> float:
    price = parse._number(event, name)
    if not 0.0 <= price <= 1.0:
        raise InvalidTrade(f"{name} {price!r} is outside [0, 1]")
    return price


def _price_or_none(event: dict[str, Any], name: str) -> float | None:
    if event.get(name) in (None, ""):
        return None
    return _price(event, name)


def _size(event: dict[str, Any], name: str) -> float:
    size = parse._number(event, name)
    if size < 0.0:
        raise InvalidTrade(f"{name} {size!r} is negative")
    return size


def _positive(event: dict[str, Any], name: str) -> float:
    value = parse._number(event, name)
    if value <= 0.0:
        raise InvalidTrade(f"{name} {value!r} is not positive")
    return value


def _optional_number(event: dict[str, Any], name: str) -> float | None:
    if event.get(name) in (None, ""):
        return None
    return parse._number(event, name)
