"""Book rows as COPY bytes: the C encoding of a batch (loader.scan.book_copy) and the
Python one of price changes (loader.bookcopy.encode_changes) against psycopg's own binary
dumpers.

The C encoding must take exactly the price_change lines loader.scan.price_change_fields
takes (but for a token seen with another market), and only best_bid_ask lines whose every
event loader.bookscan.fast_quote takes; give the bytes of the rows those read (as
loader.bookstore stores them); and leave every other line, untouched, to the Python path.
"""

from __future__ import annotations

import json
import random
import struct
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg.adapt import Transformer
from psycopg.pq import Format

from bench.mix import price_change_text
from loader import bookcopy, scan
from loader.books import ChangeRow, QuoteRow
from loader.bookscan import _BAD, _ms_time, _received_or_bad, fast_quote
from loader.bookstore import _change_rows
from loader.keys import token_key
from tests.accel import not_built
from tests.fakes.stream import Universe
from tests.loader.helpers import BASE_NS, MARKET, real_frames
from tests.loader.test_bookscan import TOKEN, _events, _quotes
from tests.loader.test_scan import RECORD_TIME_EDGES
from wal.records import encode_frame, encode_record, frame

NOT_BUILT = not_built("loader/_scan.c", "price changes are encoded the slower Python way")
SEGMENT_ID = 7


def _psycopg_rows(rows: list[tuple[Any, ...]], columns: tuple[tuple[str, str], ...]) -> bytes:
    """The COPY rows psycopg's binary dumpers make of storage rows of ``columns``."""
    tx = Transformer()
    tx.set_dumper_types([psycopg.adapters.types[kind].oid for _, kind in columns], Format.BINARY)
    out = bytearray()
    for row in rows:
        out += struct.pack("!h", len(row))
        for value in tx.dump_sequence(row, [Format.BINARY] * len(row)):
            out += struct.pack("!i", -1) if value is None else struct.pack("!i", len(value))
            out += b"" if value is None else bytes(value)
    return bytes(out)


def _quotes_of(line: bytes) -> list[QuoteRow] | None:
    """The rows fast_quote gives for a frame line of best_bid_ask events, if it takes all."""
    record = orjson.loads(line)
    received = _received_or_bad(record.get("ts_ns"))
    text = record.get("text")
    if record.get("type") != "frame" or not isinstance(text, str) or received is _BAD:
        return None
    events = orjson.loads(text)
    rows: list[QuoteRow] = []
    for event in events if isinstance(events, list) else [events]:
        if not isinstance(event, dict) or not fast_quote(event, received, rows):
            return None
    return rows


@dataclass
class Want:
    changes: list[ChangeRow] = field(default_factory=list)
    quotes: list[QuoteRow] = field(default_factory=list)
    keys: dict[str, tuple[str, int]] = field(default_factory=dict)


def _expected(data: bytes, rest: list[int]) -> Want:
    """Line by line, what the lines book_copy took must give; that it declined only
    price_change lines with a token seen before with another market, or lines that
    price_change_fields does not take."""
    assert scan.price_change_fields is not None, NOT_BUILT
    want = Want()
    declined = set(rest)
    start = 0
    while start < len(data):
        end = data.index(b"\n", start)
        got = scan.price_change_fields(data, start, end, ChangeRow, _ms_time, _received_or_bad)
        rows: list[Any] = list(got[1]) if got else []
        if start not in declined and got is None:
            quotes = _quotes_of(data[start:end])
            assert quotes is not None, data[start:end]
            rows = quotes
        keys, clash = dict(want.keys), False
        for row in rows:
            pair = (row.market, token_key(row.token_id, row.market))
            clash = clash or keys.setdefault(row.token_id, pair)[0] != row.market
        if start in declined:
            assert got is None or clash, data[start:end]
        else:
            assert not clash
            want.keys = keys
            (want.changes if got else want.quotes).extend(rows)
        start = end + 1
    return want


def _check(data: bytes) -> None:
    assert scan.book_copy is not None, NOT_BUILT
    changes, quotes, keys = bytearray(b"before"), bytearray(b"and"), {}
    taken, change_rows, quote_rows, first, last, rest = scan.book_copy(
        data, changes, quotes, SEGMENT_ID, keys, token_key
    )
    want = _expected(data, rest)
    stored = list(_change_rows(want.changes, SEGMENT_ID, token_key, {}))
    assert bytes(changes) == b"before" + _psycopg_rows(stored, bookcopy.CHANGE_COLUMNS)
    quote_rows_stored = [
        (q.ts, token_key(q.token_id, q.market), *q[3:], SEGMENT_ID) for q in want.quotes
    ]
    assert bytes(quotes) == b"and" + _psycopg_rows(quote_rows_stored, bookcopy.QUOTE_COLUMNS)
    assert taken == data.count(b"\n") - len(rest)
    assert (change_rows, quote_rows) == (len(want.changes), len(want.quotes))
    ms = [round(row.ts.timestamp() * 1000) for row in [*want.changes, *want.quotes]]
    assert (first, last) == ((min(ms), max(ms)) if ms else (None, None))
    assert keys == want.keys
    twin = bytearray()
    assert bookcopy.encode_changes(stored, twin) == change_rows
    assert bytes(twin) == bytes(changes[len(b"before") :])


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.lists(_events(), min_size=1, max_size=3) | st.lists(_quotes(), min_size=1, max_size=2),
        min_size=1,
        max_size=4,
    ),
    st.booleans(),
    st.integers(0, 2**64) | st.just(BASE_NS) | st.sampled_from(RECORD_TIME_EDGES),
)
def test_a_batch_encodes_as_its_lines_read_one_by_one(
    lines: list[list[dict[str, Any]]], compact: bool, ts_ns: int
) -> None:
    separators = (",", ":") if compact else None
    data = b"".join(
        encode_frame(
            ts_ns, 1, i, json.dumps(events if len(events) > 1 else events[0], separators=separators)
        )
        for i, events in enumerate(lines)
    )
    _check(data)


def _lines(texts: list[str]) -> bytes:
    return b"".join(encode_frame(BASE_NS + i, 2, i, text) for i, text in enumerate(texts))


def _copy(data: bytes, keys: dict[str, Any] | None = None) -> tuple[Any, ...]:
    assert scan.book_copy is not None, NOT_BUILT
    keys = {} if keys is None else keys
    return scan.book_copy(data, bytearray(), bytearray(), 1, keys, token_key)


def test_the_feed_s_price_changes_and_quotes_are_encoded_and_the_rest_is_left() -> None:
    universe = Universe(3)
    universe.add_markets(20)
    tokens = universe.tokens()
    feed = [item["frame"] for item in real_frames()]
    feed += [universe.frame(tokens, 0.01, True) for _ in range(300)]
    single = [text for text in feed[-20:] if "price_changes" in text and text.startswith("{")]
    assert len(single) > 1
    feed.append("[" + ",".join(single) + "]")  # events batched into one array
    data = _lines(feed)
    starts = [0] + [i + 1 for i, byte in enumerate(data[:-1]) if byte == ord("\n")]
    _taken, change_rows, quote_rows, _first, _last, rest = _copy(data)
    assert change_rows > 300 and quote_rows > 10
    left = [feed[starts.index(start)] for start in rest]
    assert [text for text in left if '"price_changes"' in text or "best_bid_ask" in text] == []
    others = [price_change_text(i, random.Random(i)) for i in range(100)]  # tokens' markets vary
    meta = {"type": "meta", "ts_ns": BASE_NS, "source": "s", "text": "{}"}
    data = _lines(feed + others) + encode_record(meta)
    data += encode_record(frame(BASE_NS, 1, 0, b"\x00binary"))
    _check(data)


def _change_line(market: str = MARKET, token: str = TOKEN) -> bytes:
    entry = {"asset_id": token, "price": "0.5", "size": "10", "side": "BUY", "hash": "ab"}
    event = {
        "market": market,
        "price_changes": [dict(entry, best_bid="0.4", best_ask="0.6")],
        "timestamp": "1786728432359",
        "event_type": "price_change",
    }
    return encode_frame(BASE_NS, 1, 0, json.dumps(event))


def _quote_line(market: str = MARKET, spread: str = "0.2") -> bytes:
    event = {
        "market": market,
        "asset_id": TOKEN,
        "best_bid": "0.4",
        "best_ask": "",
        "spread": spread,
        "timestamp": "1786728432359",
        "event_type": "best_bid_ask",
    }
    return encode_frame(BASE_NS, 1, 0, json.dumps(event))


def test_a_token_held_with_another_market_declines_the_line() -> None:
    data = _change_line() + _change_line(market="0xother") + _quote_line(market="0xother")
    keys: dict[str, Any] = {}
    taken, change_rows, quote_rows, _first, _last, rest = _copy(data, keys)
    second = len(_change_line())
    third = second + len(_change_line(market="0xother"))
    assert (taken, change_rows, quote_rows, rest) == (1, 1, 0, [second, third])
    assert keys == {TOKEN: (MARKET, token_key(TOKEN, MARKET))}
    assert _copy(_quote_line(market="0xother"), keys)[1:3] == (0, 0)
    _check(data)


def test_spreads_other_than_plain_decimals_are_left_to_python() -> None:
    for spread in ("1e-2", "-0.01", "", "0.01"):
        _check(_quote_line(spread=spread))
    assert _copy(_quote_line(spread="-0.01"))[5] == [0]
    assert _copy(_quote_line(spread=""))[2] == 1


def test_an_error_of_the_key_function_or_the_keys_reaches_the_caller() -> None:
    def failing(token_id: str, market: str) -> int:
        raise RuntimeError("no key")

    assert scan.book_copy is not None, NOT_BUILT
    for line in (_change_line(), _quote_line()):
        with pytest.raises(RuntimeError, match="no key"):
            scan.book_copy(line, bytearray(), bytearray(), 1, {}, failing)
        with pytest.raises(TypeError, match="pairs"):
            _copy(line, {TOKEN: 3})
        with pytest.raises(OverflowError):
            scan.book_copy(line, bytearray(), bytearray(), 1, {}, lambda _t, _m: 2**64)


def test_the_python_encoding_writes_nulls_and_text_hashes_as_psycopg_does() -> None:
    ts = _ms_time(1786728432359)
    rows = [
        (ts, -5, 0.5, 0.0, None, None, None, 1, False, None, None),
        (ts, 2**62, 1.0, 3.25, 0.1, 0.9, _received_or_bad(BASE_NS), 2, True, b"\x01", None),
        (ts, 0, 0.0, 1e300, 0.0, 1.0, ts, 3, True, None, "AB é"),
    ]
    out = bytearray()
    assert bookcopy.encode_changes(rows, out) == 3
    assert bytes(out) == _psycopg_rows(rows, bookcopy.CHANGE_COLUMNS)
    latin = bytearray()
    bookcopy.encode_changes(rows[2:], latin, "iso8859-1")  # the connection's encoding
    assert latin.endswith(struct.pack("!i", 4) + "AB é".encode("iso8859-1"))
