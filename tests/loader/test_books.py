"""Book parsing (loader/books.py): every real frame, both price_change formats, bad input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loader.books import BookResult, parse_book_event, parse_books
from loader.bookscan import scan_books
from loader.parse import scan_batch
from tests.loader.bookhelpers import TABLES, events_of, expected_rows
from tests.loader.helpers import BASE_MS, BASE_NS, real_frames, trade_event
from wal.records import encode_record, frame, seal, segment_header


def _as_tuples(result: BookResult) -> dict[str, list[tuple[Any, ...]]]:
    return {
        "book_snapshots": [tuple(r) for r in result.snapshots],
        "price_changes": [tuple(r) for r in result.changes],
        "best_bid_ask": [tuple(r) for r in result.quotes],
        "tick_size_changes": [tuple(r) for r in result.ticks],
    }


@pytest.mark.parametrize("index", range(len(real_frames())))
def test_every_real_frame_gives_its_book_rows_field_by_field(index: int) -> None:
    text = real_frames()[index]["frame"]
    record = frame(BASE_NS, 0, index, text)
    want: dict[str, list[tuple[Any, ...]]] = {table: [] for table in TABLES}
    for event in events_of(text):
        for table, rows in expected_rows(event, BASE_NS).items():
            want[table].extend(rows)
    result = parse_books(record)
    assert result.errors == []
    assert _as_tuples(result) == want


def test_real_frames_hold_every_book_event_type_and_both_price_change_formats() -> None:
    kinds = set()
    for item in real_frames():
        for event in events_of(item["frame"]):
            kind = event.get("event_type")
            if kind == "price_change":
                kind += "/new" if "price_changes" in event else "/old"
            kinds.add(kind)
    assert {
        "book",
        "price_change/new",
        "price_change/old",
        "best_bid_ask",
        "tick_size_change",
    } <= kinds


def test_snapshot_levels_are_best_first_whatever_order_they_arrive_in() -> None:
    event = {
        "event_type": "book",
        "asset_id": "1",
        "market": "0xm",
        "timestamp": str(BASE_MS),
        "bids": [
            {"price": ".48", "size": "1"},
            {"price": "0.5", "size": "2"},
            {"price": "0.1", "size": "3"},
        ],
        "asks": [{"price": "0.9", "size": "4"}, {"price": "0.52", "size": "5"}],
    }
    result = BookResult()
    assert parse_book_event(event, result) == []
    snap = result.snapshots[0]
    assert (snap.bids_price, snap.bids_size) == ([0.5, 0.48, 0.1], [2.0, 1.0, 3.0])
    assert (snap.asks_price, snap.asks_size) == ([0.52, 0.9], [5.0, 4.0])
    assert snap.hash is None and snap.received_at is None


def test_old_price_change_format_gives_one_row_per_change_without_best_prices() -> None:
    event = {
        "event_type": "price_change",
        "asset_id": "7",
        "market": "0xm",
        "hash": "ab",
        "timestamp": str(BASE_MS),
        "changes": [
            {"price": "0.4", "side": "BUY", "size": "10"},
            {"price": "0.6", "side": "SELL", "size": "0"},
        ],
    }
    result = BookResult()
    assert parse_book_event(event, result) == []
    assert [
        (c.token_id, c.side, c.price, c.size, c.best_bid, c.best_ask, c.hash)
        for c in result.changes
    ] == [
        ("7", "BUY", 0.4, 10.0, None, None, "ab"),
        ("7", "SELL", 0.6, 0.0, None, None, "ab"),
    ]


def test_a_bad_price_change_entry_is_refused_and_the_others_load() -> None:
    event = {
        "event_type": "price_change",
        "market": "0xm",
        "timestamp": str(BASE_MS),
        "price_changes": [
            {
                "asset_id": "1",
                "price": "0.5",
                "size": "3",
                "side": "BUY",
                "best_bid": "",
                "best_ask": "0.6",
            },
            {"asset_id": "1", "price": "1.5", "size": "3", "side": "BUY"},
            {"asset_id": "1", "price": "0.5", "size": "3", "side": "HOLD"},
            "junk",
        ],
    }
    result = BookResult()
    reasons = parse_book_event(event, result)
    assert len(result.changes) == 1 and result.changes[0].best_bid is None
    assert result.changes[0].best_ask == 0.6
    assert len(reasons) == 3 and "outside [0, 1]" in reasons[0] and "HOLD" in reasons[1]


@pytest.mark.parametrize(
    "event",
    [
        {
            "event_type": "book",
            "asset_id": "1",
            "market": "0xm",
            "timestamp": "1786728467000",
            "bids": "x",
            "asks": [],
        },
        {
            "event_type": "book",
            "market": "0xm",
            "timestamp": "1786728467000",
            "bids": [],
            "asks": [],
        },
        {
            "event_type": "book",
            "asset_id": "1",
            "market": "0xm",
            "timestamp": "soon",
            "bids": [],
            "asks": [],
        },
        {
            "event_type": "book",
            "asset_id": "1",
            "market": "0xm",
            "timestamp": "1786728467000",
            "bids": [{"price": "0.5", "size": "-1"}],
            "asks": [],
        },
        {
            "event_type": "best_bid_ask",
            "asset_id": "1",
            "market": "0xm",
            "timestamp": "1786728467000",
            "best_bid": "nan",
            "best_ask": "0.5",
            "spread": "0.1",
        },
        {
            "event_type": "tick_size_change",
            "asset_id": "1",
            "market": "0xm",
            "timestamp": "1786728467000",
            "old_tick_size": "0.01",
            "new_tick_size": "0",
        },
        {
            "event_type": "price_change",
            "market": "0xm",
            "timestamp": "1786728467000",
            "price_changes": {},
        },
        {
            "event_type": "price_change",
            "asset_id": "1",
            "timestamp": "1786728467000",
            "changes": [],
        },
    ],
)
def test_malformed_book_events_are_refused_with_a_reason(event: dict[str, Any]) -> None:
    result = BookResult()
    reasons = parse_book_event(event, result)
    assert result.rows == 0 and len(reasons) == 1 and event["event_type"] in reasons[0]


def _batch(texts: list[str]) -> bytes:
    records = [segment_header(0, BASE_NS, "tests", host="t")]
    records += [frame(BASE_NS + i, 0, i, t) for i, t in enumerate(texts)]
    records.append(seal(BASE_NS, len(records) + 1, len(texts)))
    return b"".join(map(encode_record, records))


def test_scan_books_gives_the_same_trades_and_counts_as_scan_batch() -> None:
    texts = [item["frame"] for item in real_frames()]
    texts += [json.dumps(trade_event(1)), json.dumps([trade_event(2), trade_event(3, price="9")])]
    data = _batch(texts)
    trades, books = scan_books(data, segment="s", offset=7)
    assert trades == scan_batch(data, segment="s", offset=7)
    assert len(trades.rows) == 4 and len(trades.errors) == 1
    assert books.errors == [] and books.rows > 0


@given(st.lists(st.text(max_size=30), max_size=5))
def test_scan_books_never_raises_on_frame_text(texts: list[str]) -> None:
    trades, _books = scan_books(_batch(texts))
    assert trades.frames == len(texts)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)
_book_keys = st.sampled_from(
    ["event_type", "price_changes", "changes", "bids", "asks", "side", "price", "asset_id"]
)


@given(
    st.lists(
        st.dictionaries(
            _book_keys,
            _json | st.sampled_from(["price_change", "book", "best_bid_ask", "tick_size_change"]),
        ),
        max_size=4,
    )
)
def test_scan_books_never_raises_on_odd_json_values(events: list[dict[str, Any]]) -> None:
    trades, _books = scan_books(_batch([json.dumps(event) for event in events]))
    assert trades.frames == len(events)
