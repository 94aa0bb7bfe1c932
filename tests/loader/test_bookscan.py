"""The price_change fast path (loader/bookscan.py) against the reference (loader/books.py).

For every event it accepts, it must give exactly the rows parse_book_event gives (value
for value, type for type); for every other event it adds nothing, so the reference runs.
"""

from __future__ import annotations

import json
import random
from typing import Any
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.mix import price_change_text
from loader import parse, scan, values
from loader.books import BookResult, ChangeRow, QuoteRow, parse_book_event
from loader.bookscan import (
    _BAD,
    _event_time,
    _ms_time,
    _received_or_bad,
    fast_price_changes,
    fast_quote,
    scan_books,
)
from tests.accel import not_built
from tests.loader.helpers import BASE_MS, BASE_NS, MARKET, real_frames
from tests.loader.test_scan import RECORD_TIME_EDGES
from wal.records import encode_frame, encode_record, frame

NOT_BUILT = not_built("loader/_scan.c", "price changes are read the slower Python way")

TOKEN = "71321045679252212594626385532706912750332728571942532289631379312455583992563"

# Values near the canonical ones and every kind of wrong one a feed could send.
_texts = st.one_of(
    st.sampled_from(["0", "1", "0.5", ".48", "0.001", "1.0", "374.34", "", "-0.1", "1.5"]),
    st.sampled_from(["1e-3", "nan", "inf", "0x10", " 0.5", "\u0660.5", "1" * 70, "BUY", "SELL"]),
    st.from_regex(r"\A[0-9.]{1,6}\Z"),
    st.text(max_size=8),
)
_values = st.one_of(
    _texts, st.none(), st.booleans(), st.integers(-2, 2), st.floats(), st.just([]), st.just({})
)
_ids = st.one_of(
    st.sampled_from([TOKEN, MARKET, "7", "", "a\x00b", "é", "\ud800", "x" * 300]),
    st.integers(0, 3),
    st.none(),
)
_hashes = st.one_of(
    st.sampled_from(["56621a121a47ed9333273e21c83b660cff37ae50", "AB", "ab", "", "é", "z" * 257]),
    st.none(),
    st.integers(0, 1),
)
_times = st.one_of(
    st.sampled_from([str(BASE_MS), str(BASE_MS + 999), "1577836799999", "4102444800001"]),
    st.sampled_from(["0" + str(BASE_MS), str(BASE_MS)[:-1], "\u0661" * 13, ""]),
    st.integers(BASE_MS - 2, BASE_MS + 2),
    st.none(),
)


def _maybe(entry: dict[str, Any], draw: Any, name: str, values: Any, usual: Any) -> None:
    """``entry[name]``: mostly the usual value, sometimes another, sometimes absent."""
    roll = draw(st.integers(0, 9))
    if roll < 7:
        entry[name] = usual
    elif roll < 9:
        entry[name] = draw(values)


@st.composite
def _entries(draw: Any) -> Any:
    if draw(st.integers(0, 19)) == 0:
        return draw(_values)
    entry: dict[str, Any] = {}
    _maybe(entry, draw, "asset_id", _ids, TOKEN)
    _maybe(entry, draw, "price", _values, draw(st.sampled_from(["0.5", ".48", "1", "0"])))
    _maybe(entry, draw, "size", _values, draw(st.sampled_from(["200", "0", "374.34"])))
    _maybe(entry, draw, "side", _values, draw(st.sampled_from(["BUY", "SELL"])))
    _maybe(entry, draw, "hash", _hashes, "56621a121a47ed9333273e21c83b660cff37ae50")
    _maybe(entry, draw, "best_bid", _values, draw(st.sampled_from(["0.5", "", ".1"])))
    _maybe(entry, draw, "best_ask", _values, draw(st.sampled_from(["1", "", "0.52"])))
    return entry


@st.composite
def _events(draw: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"event_type": "price_change"}
    _maybe(event, draw, "market", _ids, MARKET)
    _maybe(event, draw, "timestamp", _times, str(BASE_MS + draw(st.integers(0, 5000))))
    roll = draw(st.integers(0, 9))
    if roll < 8:
        event["price_changes"] = draw(st.lists(_entries(), max_size=4))
    elif roll == 8:
        event["price_changes"] = draw(_values)
    else:
        event.update(asset_id=TOKEN, changes=[{"price": "0.4", "side": "BUY", "size": "1"}])
    return event


@st.composite
def _quotes(draw: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"event_type": "best_bid_ask"}
    _maybe(event, draw, "asset_id", _ids, TOKEN)
    _maybe(event, draw, "market", _ids, MARKET)
    _maybe(event, draw, "timestamp", _times, str(BASE_MS + draw(st.integers(0, 5000))))
    _maybe(event, draw, "best_bid", _values, draw(st.sampled_from(["0.5", "", ".1"])))
    _maybe(event, draw, "best_ask", _values, draw(st.sampled_from(["1", "", "0.52"])))
    _maybe(event, draw, "spread", _values, draw(st.sampled_from(["0.02", "", "-0.01", "1e-2"])))
    return event


@settings(max_examples=1000)
@given(_quotes(), st.sampled_from([BASE_NS, None]))
def test_fast_quote_row_is_the_reference_row_or_it_declines(
    event: dict[str, Any], received_ns: int | None
) -> None:
    received = None if received_ns is None else values.received_at(received_ns)
    rows: list[QuoteRow] = []
    accepted = fast_quote(event, received, rows)
    want = BookResult()
    valid = not parse_book_event(event, want, received_ns=received_ns)
    if accepted:
        assert valid and _typed(rows) == _typed(want.quotes)
    else:
        assert rows == []


def _reference(event: dict[str, Any], received_ns: int | None) -> tuple[list[ChangeRow], bool]:
    result = BookResult()
    reasons = parse_book_event(event, result, received_ns=received_ns)
    return result.changes, not reasons


def _typed(rows: list[Any]) -> list[list[tuple[type, Any]]]:
    """Rows with each value's type, so 1 and 1.0 and True differ."""
    return [[(type(v), v) for v in row] for row in rows]


@settings(max_examples=1500)
@given(_events(), st.sampled_from([BASE_NS, BASE_NS + 123_456_789, None]))
def test_fast_path_rows_are_the_reference_rows_or_it_declines(
    event: dict[str, Any], received_ns: int | None
) -> None:
    received = None if received_ns is None else values.received_at(received_ns)
    rows: list[ChangeRow] = []
    accepted = fast_price_changes(event, received, rows)
    want, valid = _reference(event, received_ns)
    if accepted:
        assert valid and _typed(rows) == _typed(want)
    else:
        assert rows == []


def test_fast_path_takes_the_canonical_events_of_real_frames() -> None:
    taken = 0
    for item in real_frames():
        value = json.loads(item["frame"])
        for event in value if isinstance(value, list) else [value]:
            if event.get("event_type") == "price_change" and "price_changes" in event:
                rows: list[ChangeRow] = []
                assert fast_price_changes(event, values.received_at(BASE_NS), rows)
                assert _typed(rows) == _typed(_reference(event, BASE_NS)[0])
                taken += 1
            elif event.get("event_type") == "best_bid_ask":
                quotes: list[QuoteRow] = []
                assert fast_quote(event, values.received_at(BASE_NS), quotes)
                want = BookResult()
                assert not parse_book_event(event, want, received_ns=BASE_NS)
                assert _typed(quotes) == _typed(want.quotes)
                taken += 1
    assert taken >= 3


@settings(max_examples=300)
@given(st.lists(_events() | _quotes(), min_size=1, max_size=6), st.integers(0, 2))
def test_scan_books_gives_the_reference_rows_and_errors(
    events: list[dict[str, Any]], arrays: int
) -> None:
    texts = [json.dumps(events[:arrays]), *map(json.dumps, events[arrays:])]
    data = b"".join(encode_record(frame(BASE_NS + i, 0, i, t)) for i, t in enumerate(texts))
    _trades, books = scan_books(data, segment="s", offset=3)
    want = BookResult()
    for i, text in enumerate(texts):
        value = json.loads(text)
        for event in value if isinstance(value, list) else [value]:
            for reason in parse_book_event(event, want, received_ns=BASE_NS + i):
                want.errors.append(parse.ParseError(reason, "s", 3, values.short(event, 200)))
    assert _typed(books.changes) == _typed(want.changes)
    assert _typed(books.quotes) == _typed(want.quotes)
    assert books.errors == want.errors


def _reference_or_bad(convert: Any, value: Any) -> Any:
    try:
        return convert(value)
    except parse.InvalidTrade:
        return _BAD


@given(st.one_of(st.integers(BASE_NS - 10**18, BASE_NS + 10**18), st.none(), st.booleans()))
def test_receive_times_are_the_reference_ones(ns: int | None) -> None:
    want = None if ns is None else _reference_or_bad(values.received_at, ns)
    assert _received_or_bad(ns) == want


@given(st.one_of(st.integers(0, 10**14).map(str), _times, st.text(max_size=14)))
def test_event_times_are_the_reference_ones(text: Any) -> None:
    assert _reference_or_bad(_event_time, text) == _reference_or_bad(values.timestamp, text)


# The C reading of price_change lines (loader.scan.price_change_fields) against the
# Python path: the same rows, errors and counts for any line, and it takes the feed's.
def _both_ways(data: bytes) -> tuple[Any, Any]:
    got = scan_books(data, segment="s", offset=3)
    with mock.patch.object(scan, "price_change_fields", None):
        want = scan_books(data, segment="s", offset=3)
    return got, want


def _same(got: Any, want: Any) -> None:
    (trades, books), (want_trades, want_books) = got, want
    assert _typed(books.changes) == _typed(want_books.changes)
    assert _typed(books.quotes) == _typed(want_books.quotes)
    assert books.errors == want_books.errors
    assert (trades.records, trades.frames, trades.rows) == (
        want_trades.records,
        want_trades.frames,
        want_trades.rows,
    )


@settings(max_examples=1500, deadline=None)
@given(
    st.lists(_events(), min_size=1, max_size=3),
    st.booleans(),
    st.booleans(),
    st.integers(0, 2**64) | st.just(BASE_NS) | st.sampled_from(RECORD_TIME_EDGES),
)
def test_the_c_reading_of_price_change_lines_gives_the_python_rows(
    events: list[dict[str, Any]], array: bool, compact: bool, ts_ns: int
) -> None:
    text = json.dumps(events if array else events[0], separators=(",", ":") if compact else None)
    _same(*_both_ways(encode_frame(ts_ns, 1, 0, text)))


def test_the_c_reading_takes_the_feed_s_price_changes() -> None:
    assert scan.price_change_fields is not None, NOT_BUILT
    texts = [price_change_text(i, random.Random(i)) for i in range(200)]
    texts += [item["frame"] for item in real_frames() if '"price_change"' in item["frame"]]
    texts.append("[" + ",".join(texts[:3]) + "]")
    for i, text in enumerate(texts):
        line = encode_frame(BASE_NS + i, 2, i, text)
        taken = scan.price_change_fields(
            line, 0, len(line) - 1, ChangeRow, _ms_time, _received_or_bad
        )
        if '"price_changes"' in text:
            assert taken is not None and taken[0] == 2 and taken[1], text
            assert all(type(row) is ChangeRow for row in taken[1])
        _same(*_both_ways(line))
