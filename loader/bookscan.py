"""Scanning a zstd frame's records with ``--books``: trades and book rows, each line
decoded once. Pure: no I/O, no clock.

Price changes of the current format (most of a book-heavy feed) and best bid/asks take a
fast path (:func:`fast_price_changes`, :func:`fast_quote`): each distinct value text is
checked once, by the helpers of :mod:`loader.books`, and its value kept; anything unusual
is declined and takes the general path (:func:`loader.books.parse_book_event`).
tests/loader/test_bookscan.py holds the two to the same rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from loader import parse, scan, values
from loader.books import (
    BEST_BID_ASK_EVENT,
    BOOK_EVENTS,
    PRICE_CHANGE_EVENT,
    BookResult,
    ChangeRow,
    QuoteRow,
    _optional_number,
    _price,
    _price_or_none,
    _size,
    add_event,
)
from loader.keys import token_key
from loader.parse import BatchResult, ParseError
from loader.values import InvalidTrade


def scan_books(
    batch: bytes | Sequence[bytes],
    *,
    segment: str = "",
    offset: int = 0,
    found: scan.Lines | None = None,
    segment_id: int | None = None,
) -> tuple[BatchResult, BookResult]:
    """Parse one zstd frame's records into trades and book rows, decoding each line once.

    The trades, errors and counts are those :func:`loader.parse.scan_batch` gives for the
    same bytes. Raises ValueError on a line that is no record. ``found`` (what
    loader.scan.lines gave) is not needed: every line is decoded here. Given the
    ``segment_id`` the rows are for, and with the C build, the feed-shaped price_change and
    best_bid_ask lines become COPY rows in ``copied`` (loader.bookcopy) in one call,
    before the rest.
    """
    data = batch if isinstance(batch, bytes) else b"".join(line + b"\n" for line in batch)
    if data and not data.endswith(b"\n"):
        raise ValueError("a batch is whole lines, each ending in a newline")
    trades, books = BatchResult(), BookResult()
    parse_trade, add, fast = parse.parse_trade, add_event, fast_price_changes
    c_changes, changes = scan.price_change_fields, books.changes
    lines: Iterable[bytes]
    if segment_id is not None and scan.book_copy is not None and data:
        copied = books.copied
        taken, change_rows, quote_rows, first, last, rest = scan.book_copy(
            data, copied.changes, copied.quotes, segment_id, copied.keys, token_key
        )
        copied.add(change_rows, quote_rows, first, last)
        trades.records += taken
        trades.frames += taken
        lines = (data[start : data.index(b"\n", start)] for start in rest)
    else:
        lines = data.split(b"\n")[:-1] if data else []
    for line in lines:
        trades.records += 1
        if c_changes is not None:  # fast_price_changes' rows, read in C
            taken = c_changes(line, 0, len(line), ChangeRow, _ms_time, _received_or_bad)
            if taken is not None:
                trades.frames += 1
                changes.extend(taken[1])
                continue
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
                    add(event, received_ns, books, segment, offset)
            elif kind == BEST_BID_ASK_EVENT and received is not _BAD:
                if not fast_quote(event, received, books.quotes):
                    add(event, received_ns, books, segment, offset)
            elif kind == parse.TRADE_EVENT:
                try:
                    row = parse_trade(event, received_ns=received_ns)
                except InvalidTrade as exc:
                    trades.errors.append(
                        ParseError(exc.reason, segment, offset, values.short(event, 200))
                    )
                    continue
                if row is not None:
                    trades.rows.append(row)
            elif isinstance(kind, str) and kind in BOOK_EVENTS:
                add(event, received_ns, books, segment, offset)
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
            ):  # not a text values.optional_text gives back as it is: ask it
                hsh = values.optional_text(entry, "hash")
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


def fast_quote(event: dict[str, Any], received: datetime | None, into: list[QuoteRow]) -> bool:
    """Add the row of a valid ``best_bid_ask`` event, as :func:`parse_book_event` would;
    False (nothing added) for any other event."""
    try:
        token, market, spread = event["asset_id"], event["market"], event["spread"]
        if token not in _IDS:
            _learn_id(token)
        if market not in _IDS:
            _learn_id(market)
        ts = _event_time(event.get("timestamp"))
        bid = _QUOTES.get(event["best_bid"], _MISSING)
        if bid is _MISSING:
            bid = _learn(_QUOTES, event["best_bid"], _price_or_none)
        ask = _QUOTES.get(event["best_ask"], _MISSING)
        if ask is _MISSING:
            ask = _learn(_QUOTES, event["best_ask"], _price_or_none)
        number = _NUMBERS.get(spread, _MISSING)
        if number is _MISSING:
            number = _learn(_NUMBERS, spread, _optional_number)
    except (KeyError, TypeError, InvalidTrade):
        return False
    into.append(tuple.__new__(QuoteRow, (ts, token, market, bid, ask, number, received)))
    return True


# The fast path's checked values by text: a feed has a few hundred distinct prices and a
# few thousand sizes; past this many the cache starts over.
MAX_CACHED_VALUES = 1 << 14
_PRICES: dict[str, float] = {}
_SIZES: dict[str, float] = {}
_QUOTES: dict[str, float | None] = {}  # best bid/ask: may be ""
_NUMBERS: dict[str, float | None] = {}  # spreads: any finite number, or ""
_MISSING = object()
_IDS: set[str] = set()  # token and market ids that values.text accepted
_SECONDS: dict[int, datetime] = {}  # epoch second -> its datetime
_MILLIS = [timedelta(milliseconds=ms) for ms in range(1000)]
_MICROS = [timedelta(microseconds=us) for us in range(1000)]
_MIN_NS, _MAX_NS = values.MIN_TIME_MS * 1_000_000, values.MAX_TIME_MS * 1_000_000
_BAD = object()  # a record ts_ns that values.received_at refuses
MAX_TEXT, NUL = values.MAX_TEXT_CHARS, "\x00"


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
    _IDS.add(values.text({"v": value}, "v"))


def _event_time(value: Any) -> datetime:
    """``values.timestamp(value)``; for 13 ASCII digits, from the datetime of its second."""
    if type(value) is str and len(value) == 13 and value.isascii() and value.isdigit():
        ms = int(value)
        if values.MIN_TIME_MS <= ms <= values.MAX_TIME_MS:
            return _second(ms // 1000) + _MILLIS[ms % 1000]
    return values.timestamp(value)


def _ms_time(ms: int) -> datetime:
    """The UTC time of epoch milliseconds already checked, from the datetime of the second."""
    return _second(ms // 1000) + _MILLIS[ms % 1000]


def _received_or_bad(received_ns: Any) -> Any:
    """``values.received_at(received_ns)``, None for None, _BAD where it raises; from the
    datetime of the second (the record's receive time is a new datetime per frame)."""
    if type(received_ns) is int and _MIN_NS <= received_ns <= _MAX_NS:
        us = received_ns // 1000
        return _second(us // 1_000_000) + _MILLIS[us // 1000 % 1000] + _MICROS[us % 1000]
    if received_ns is None:
        return None
    try:
        return values.received_at(received_ns)
    except InvalidTrade:
        return _BAD


def _second(epoch_s: int) -> datetime:
    second = _SECONDS.get(epoch_s)
    if second is None:
        if len(_SECONDS) >= MAX_CACHED_VALUES:
            _SECONDS.clear()
        second = _SECONDS[epoch_s] = values._EPOCH + timedelta(0, epoch_s)
    return second
