"""Price changes as COPY bytes: the C encoding of a batch (loader.scan.price_change_copy)
and the Python one (loader.bookcopy.encode_changes) against psycopg's own binary dumpers.

The C encoding must take exactly the lines loader.scan.price_change_fields takes, give
the bytes of the rows that function reads (as loader.bookstore stores them), and leave
every other line, untouched, to the Python path.
"""

from __future__ import annotations

import json
import random
import struct
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg.adapt import Transformer
from psycopg.pq import Format

from bench.mix import price_change_text
from loader import bookcopy, scan
from loader.books import ChangeRow
from loader.bookscan import _ms_time, _received_or_bad
from loader.bookstore import _change_rows
from loader.keys import token_key
from tests.accel import not_built
from tests.fakes.stream import Universe
from tests.loader.helpers import BASE_NS, MARKET, real_frames
from tests.loader.test_bookscan import TOKEN, _events
from tests.loader.test_scan import RECORD_TIME_EDGES
from wal.records import encode_frame, encode_record, frame

NOT_BUILT = not_built("loader/_scan.c", "price changes are encoded the slower Python way")
SEGMENT_ID = 7


def _psycopg_rows(rows: list[tuple[Any, ...]]) -> bytes:
    """The COPY rows psycopg's binary dumpers make of storage rows."""
    tx = Transformer()
    tx.set_dumper_types(
        [psycopg.adapters.types[kind].oid for _, kind in bookcopy.COLUMNS], Format.BINARY
    )
    out = bytearray()
    for row in rows:
        out += struct.pack("!h", len(row))
        for value in tx.dump_sequence(row, [Format.BINARY] * len(row)):
            out += struct.pack("!i", -1) if value is None else struct.pack("!i", len(value))
            out += b"" if value is None else bytes(value)
    return bytes(out)


def _reference(data: bytes) -> tuple[bytes, list[int], list[ChangeRow], dict[str, Any]]:
    """Line by line through price_change_fields: (COPY bytes, starts of the lines not
    taken, the rows read, each token's (market, key)). A line with a token seen before
    with another market is not taken: the Python path gives its rows."""
    assert scan.price_change_fields is not None, NOT_BUILT
    rest: list[int] = []
    read: list[ChangeRow] = []
    keys: dict[str, Any] = {}
    start = 0
    while start < len(data):
        end = data.index(b"\n", start)
        got = scan.price_change_fields(data, start, end, ChangeRow, _ms_time, _received_or_bad)
        line_keys = dict(keys)
        for row in got[1] if got else []:
            pair = line_keys.setdefault(
                row.token_id, (row.market, token_key(row.token_id, row.market))
            )
            if pair[0] != row.market:
                got = None
        if got is None:
            rest.append(start)
        else:
            read.extend(got[1])
            keys = line_keys
        start = end + 1
    stored = list(_change_rows(read, SEGMENT_ID, token_key, {}))
    return _psycopg_rows(stored), rest, read, keys


def _check(data: bytes) -> None:
    assert scan.price_change_copy is not None, NOT_BUILT
    want, want_rest, read, want_keys = _reference(data)
    out, keys = bytearray(b"before"), {}
    taken, rows, first, last, rest = scan.price_change_copy(data, out, SEGMENT_ID, keys, token_key)
    assert bytes(out) == b"before" + want
    assert rest == want_rest
    assert taken == data.count(b"\n") - len(rest)
    assert rows == len(read)
    ms = [round(row.ts.timestamp() * 1000) for row in read]
    assert (first, last) == ((min(ms), max(ms)) if ms else (None, None))
    assert keys == want_keys
    twin = bytearray()
    assert bookcopy.encode_changes(_change_rows(read, SEGMENT_ID, token_key, {}), twin) == rows
    assert bytes(twin) == want


@settings(max_examples=1500, deadline=None)
@given(
    st.lists(st.lists(_events(), min_size=1, max_size=3), min_size=1, max_size=4),
    st.booleans(),
    st.integers(0, 2**64) | st.just(BASE_NS) | st.sampled_from(RECORD_TIME_EDGES),
)
def test_a_batch_encodes_as_its_lines_read_one_by_one(
    lines: list[list[dict[str, Any]]], compact: bool, ts_ns: int
) -> None:
    data = b"".join(
        encode_frame(
            ts_ns,
            1,
            i,
            json.dumps(
                events if len(events) > 1 else events[0], separators=(",", ":") if compact else None
            ),
        )
        for i, events in enumerate(lines)
    )
    _check(data)


def _lines(texts: list[str]) -> bytes:
    return b"".join(encode_frame(BASE_NS + i, 2, i, text) for i, text in enumerate(texts))


def test_the_feed_s_price_changes_are_encoded_and_the_rest_is_left() -> None:
    assert scan.price_change_copy is not None, NOT_BUILT
    universe = Universe(3)
    universe.add_markets(20)
    tokens = universe.tokens()
    feed = [item["frame"] for item in real_frames()]
    feed += [universe.frame(tokens, 0.01, True) for _ in range(300)]
    feed.append("[" + ",".join(text for text in feed[-20:] if "price_changes" in text) + "]")
    data = _lines(feed)
    starts = [0] + [i + 1 for i, byte in enumerate(data[:-1]) if byte == ord("\n")]
    _taken, rows, _first, _last, rest = scan.price_change_copy(data, bytearray(), 1, {}, token_key)
    assert rows > 300
    left = [feed[starts.index(start)] for start in rest]
    assert [text for text in left if '"price_changes"' in text] == []  # all of the feed's
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


def test_a_token_held_with_another_market_declines_the_line() -> None:
    assert scan.price_change_copy is not None, NOT_BUILT
    data = _change_line() + _change_line(market="0xother")
    out, keys = bytearray(), {}
    taken, rows, _first, _last, rest = scan.price_change_copy(data, out, 1, keys, token_key)
    assert (taken, rows, rest) == (1, 1, [len(_change_line())])
    assert keys == {TOKEN: (MARKET, token_key(TOKEN, MARKET))}
    size = len(out)
    assert scan.price_change_copy(_change_line(market="0xother"), out, 1, keys, token_key)[4] == [0]
    assert len(out) == size


def test_an_error_of_the_key_function_or_the_keys_reaches_the_caller() -> None:
    assert scan.price_change_copy is not None, NOT_BUILT

    def failing(token_id: str, market: str) -> int:
        raise RuntimeError("no key")

    with pytest.raises(RuntimeError, match="no key"):
        scan.price_change_copy(_change_line(), bytearray(), 1, {}, failing)
    with pytest.raises(TypeError, match="pairs"):
        scan.price_change_copy(_change_line(), bytearray(), 1, {TOKEN: 3}, token_key)
    with pytest.raises(OverflowError):
        scan.price_change_copy(_change_line(), bytearray(), 1, {}, lambda _t, _m: 2**64)


def test_the_python_encoding_writes_nulls_and_text_hashes_as_psycopg_does() -> None:
    ts = _ms_time(1786728432359)
    rows = [
        (ts, -5, 0.5, 0.0, None, None, None, 1, False, None, None),
        (ts, 2**62, 1.0, 3.25, 0.1, 0.9, _received_or_bad(BASE_NS), 2, True, b"\x01", None),
        (ts, 0, 0.0, 1e300, 0.0, 1.0, ts, 3, True, None, "AB é"),
    ]
    out = bytearray()
    assert bookcopy.encode_changes(rows, out) == 3
    assert bytes(out) == _psycopg_rows(rows)
