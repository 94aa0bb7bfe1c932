"""loader/parse.py: every parsing rule, the real frames, and fuzzing."""

from __future__ import annotations

import contextlib
import json
import math
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loader.parse import (
    MAX_TIME_MS,
    MIN_TIME_MS,
    BatchResult,
    InvalidTrade,
    _decode_record,
    _fast_trade,
    may_hold_trade,
    parse_frame,
    parse_trade,
    parse_trade_event,
    scan_batch,
)
from loader.scan import MAX_PLAIN_U
from tests.loader.helpers import BASE_NS, DROP, real_frames, trade_event
from wal.records import encode_record, frame

# The documented example from PROTOCOL.md.
DOC_TRADE = {
    "asset_id": "21742633143463906290569050155826241533067272736897614950488156847949938836455",
    "event_type": "last_trade_price",
    "fee_rate_bps": "0",
    "market": "0xdd22472e552920b8438158ea7238bfadfa4f736aa4cee91a6b86c39ead110917",
    "price": "0.491",
    "side": "SELL",
    "size": "85.36",
    "timestamp": "1724564136087",
}


def record(text: str, ts_ns: int = BASE_NS) -> dict[str, Any]:
    return frame(ts_ns, 0, 0, text)


def test_parse_trade_event_converts_the_documented_example() -> None:
    row = parse_trade_event(DOC_TRADE, received_ns=BASE_NS)
    assert row is not None
    assert row.ts == datetime(2024, 8, 25, 5, 35, 36, 87000, tzinfo=UTC)
    assert row.token_id == DOC_TRADE["asset_id"]
    assert row.market == DOC_TRADE["market"]
    assert (row.side, row.price, row.size) == ("SELL", 0.491, 85.36)
    assert row.fee_rate_bps == Decimal("0")
    assert row.transaction_hash is None
    assert row.trade_id is None
    assert row.received_at == datetime.fromtimestamp(BASE_NS / 1e9, UTC)


VALID_CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("unpadded price", {"price": ".48"}, {"price": 0.48}),
    ("price zero", {"price": "0"}, {"price": 0.0}),
    ("price one", {"price": "1"}, {"price": 1.0}),
    ("json number price", {"price": 0.25}, {"price": 0.25}),
    ("json integer price", {"price": 1}, {"price": 1.0}),
    ("json number size", {"size": 12.5}, {"size": 12.5}),
    ("size zero", {"size": "0"}, {"size": 0.0}),
    ("exponent size", {"size": "1e3"}, {"size": 1000.0}),
    ("buy side", {"side": "BUY"}, {"side": "BUY"}),
    ("empty fee is null", {"fee_rate_bps": ""}, {"fee_rate_bps": None}),
    ("absent fee is null", {"fee_rate_bps": DROP}, {"fee_rate_bps": None}),
    ("null fee is null", {"fee_rate_bps": None}, {"fee_rate_bps": None}),
    ("decimal fee kept exactly", {"fee_rate_bps": "1.5"}, {"fee_rate_bps": Decimal("1.5")}),
    ("json number fee", {"fee_rate_bps": 10}, {"fee_rate_bps": Decimal(10)}),
    ("empty hash is null", {"transaction_hash": ""}, {"transaction_hash": None}),
    ("absent hash is null", {"transaction_hash": DROP}, {"transaction_hash": None}),
    (
        "json number timestamp",
        {"timestamp": 1724564136087},
        {"ts": DOC_TRADE and datetime(2024, 8, 25, 5, 35, 36, 87000, tzinfo=UTC)},
    ),
    (
        "earliest plausible time",
        {"timestamp": str(MIN_TIME_MS)},
        {"ts": datetime(2020, 1, 1, tzinfo=UTC)},
    ),
    ("unknown extra field ignored", {"extra": [1, 2]}, {}),
]


@pytest.mark.parametrize(
    ("overrides", "expected"), [c[1:] for c in VALID_CASES], ids=[c[0] for c in VALID_CASES]
)
def test_parse_trade_event_accepts(overrides: dict[str, Any], expected: dict[str, Any]) -> None:
    row = parse_trade_event(trade_event(1, **overrides), received_ns=BASE_NS)
    assert row is not None
    for name, value in expected.items():
        assert getattr(row, name) == value, name


INVALID_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("missing price", {"price": DROP}, "price is missing"),
    ("missing size", {"size": DROP}, "size is missing"),
    ("missing side", {"side": DROP}, "side"),
    ("missing timestamp", {"timestamp": DROP}, "timestamp is missing"),
    ("missing asset_id", {"asset_id": DROP}, "asset_id is missing"),
    ("empty asset_id", {"asset_id": ""}, "asset_id is missing"),
    ("missing market", {"market": DROP}, "market is missing"),
    ("unparseable price", {"price": "abc"}, "not a decimal number"),
    ("empty price", {"price": ""}, "not a decimal number"),
    ("nan price", {"price": "NaN"}, "not a decimal number"),
    ("infinite size", {"size": "Infinity"}, "not a decimal number"),
    ("json nan size", {"size": math.nan}, "not finite"),
    ("overflowing size", {"size": "1e999"}, "not finite"),
    ("python-only underscore digits", {"size": "1_000"}, "not a decimal number"),
    ("padded number", {"price": " 0.5"}, "not a decimal number"),
    ("boolean price", {"price": True}, "not a number"),
    ("price above one", {"price": "1.01"}, "outside [0, 1]"),
    ("negative price", {"price": "-0.1"}, "outside [0, 1]"),
    ("negative size", {"size": "-5"}, "negative"),
    ("lowercase side", {"side": "buy"}, "not BUY or SELL"),
    ("unknown side", {"side": "HOLD"}, "not BUY or SELL"),
    ("list side", {"side": ["BUY"]}, "not BUY or SELL"),
    ("timestamp in seconds", {"timestamp": "1724564136"}, "not a plausible time"),
    ("timestamp in microseconds", {"timestamp": "1724564136087000"}, "not a plausible time"),
    ("timestamp after 2100", {"timestamp": str(MAX_TIME_MS + 1)}, "not a plausible time"),
    ("fractional timestamp", {"timestamp": "1724564136087.5"}, "not epoch milliseconds"),
    ("unparseable fee", {"fee_rate_bps": "free"}, "fee_rate_bps"),
    ("absurd fee", {"fee_rate_bps": "1e9"}, "fee_rate_bps"),
    ("numeric asset_id", {"asset_id": 123}, "not a string"),
    ("nul in market", {"market": "0x\x00"}, "not a plausible id"),
    ("lone surrogate in hash", {"transaction_hash": "0x\udc80"}, "not a plausible id"),
]


@pytest.mark.parametrize(
    ("overrides", "reason"), [c[1:] for c in INVALID_CASES], ids=[c[0] for c in INVALID_CASES]
)
def test_parse_trade_event_rejects(overrides: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidTrade) as info:
        parse_trade_event(trade_event(1, **overrides), received_ns=BASE_NS)
    assert reason in info.value.reason


@pytest.mark.parametrize(
    "event_type", ["book", "price_change", "tick_size_change", "best_bid_ask", None]
)
def test_parse_trade_event_ignores_other_event_types(event_type: str | None) -> None:
    assert parse_trade_event(trade_event(1, event_type=event_type)) is None


@pytest.mark.parametrize(
    "text",
    [
        "PONG",
        "INVALID OPERATION",
        "NO NEW ASSETS",
        "[]",
        "{}",
        "",
        "not json",
        "42",
        '"x"',
        "[1, 2]",
    ],
)
def test_parse_frame_treats_control_text_and_empty_arrays_as_normal(text: str) -> None:
    assert parse_frame(record(text)) == ([], [])


def test_parse_frame_reads_arrays_and_keeps_valid_events_beside_invalid_ones() -> None:
    events = [trade_event(1), trade_event(2, side="HOLD"), {"event_type": "book"}, trade_event(3)]
    rows, errors = parse_frame(record(json.dumps(events)), segment="seg", offset=77)
    assert [row.size for row in rows] == [1.01, 3.03]
    assert len(errors) == 1
    assert (errors[0].segment, errors[0].offset) == ("seg", 77)
    assert "HOLD" in errors[0].reason and errors[0].event.startswith("{")


def test_parse_frame_keeps_identical_trades_as_two_rows() -> None:
    rows, _ = parse_frame(record(json.dumps([trade_event(5), trade_event(5)])))
    assert len(rows) == 2 and rows[0] == rows[1]


def test_parse_frame_does_not_depend_on_whitespace() -> None:
    spaced = json.dumps(trade_event(4), separators=(", ", ": "), indent=2)
    assert parse_frame(record(spaced)) == parse_frame(record(json.dumps(trade_event(4))))


def test_parse_frame_reads_binary_frames() -> None:
    binary = frame(BASE_NS, 0, 0, json.dumps(trade_event(1)).encode())
    assert len(parse_frame(binary)[0]) == 1


def test_parse_frame_refuses_a_record_time_that_is_not_plausible() -> None:
    rows, errors = parse_frame(record(json.dumps(trade_event(1)), ts_ns=5))
    assert rows == [] and "ts_ns" in errors[0].reason


def test_parse_frame_reads_every_real_frame() -> None:
    trades = 0
    for item in real_frames():
        rows, errors = parse_frame(record(item["frame"]))
        assert errors == [], item["source_path"]
        trades += len(rows)
        is_trade = '"last_trade_price"' in item["frame"] and '"book"' not in item["frame"]
        assert len(rows) == (1 if is_trade else 0), item["frame"][:80]
    assert trades == 2


def test_real_trade_frame_values() -> None:
    live = next(
        i
        for i in real_frames()
        if i["live"]
        and 'last_trade_price","transaction_hash' in i["frame"].replace('"event_type":', "")
    )
    rows, _ = parse_frame(record(live["frame"]))
    assert rows[0].transaction_hash is not None and rows[0].transaction_hash.startswith("0x6c83")
    assert (rows[0].price, rows[0].size, rows[0].side) == (0.585, 2.46, "SELL")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
field_values = st.one_of(
    json_values, st.sampled_from(["", "0.5", "BUY", "SELL", "1e999", "NaN", str(MIN_TIME_MS)])
)
trade_like = st.fixed_dictionaries(
    {"event_type": st.just("last_trade_price")},
    optional={
        k: field_values
        for k in (
            "asset_id",
            "market",
            "price",
            "size",
            "side",
            "timestamp",
            "fee_rate_bps",
            "transaction_hash",
        )
    },
)
frame_texts = st.one_of(
    st.text(),
    json_values.map(json.dumps),
    trade_like.map(json.dumps),
    st.lists(trade_like, max_size=3).map(json.dumps),
)


@settings(max_examples=400, deadline=None)
@given(text=frame_texts, ts_ns=st.integers(min_value=-(2**70), max_value=2**70) | st.just(BASE_NS))
def test_parse_frame_never_raises(text: str, ts_ns: int) -> None:
    rows, errors = parse_frame(record(text, ts_ns))
    for row in rows:
        assert 0.0 <= row.price <= 1.0 and row.size >= 0 and math.isfinite(row.size)
        assert row.side in ("BUY", "SELL")
    assert all(err.reason for err in errors)


@settings(max_examples=300, deadline=None)
@given(value=json_values)
def test_parse_trade_event_never_raises_anything_but_invalid_trade(value: Any) -> None:
    event = value if isinstance(value, dict) else {"event_type": "last_trade_price", "price": value}
    with contextlib.suppress(InvalidTrade):
        parse_trade_event(event, received_ns=BASE_NS)


@settings(max_examples=400, deadline=None)
@given(text=frame_texts)
def test_prefilter_never_skips_a_frame_that_holds_a_trade_event(text: str) -> None:
    line = encode_record(record(text)).rstrip(b"\n")
    rows, errors = parse_frame(record(text))
    if rows or errors:
        assert may_hold_trade(line)


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(trade_event(1)),
        json.dumps(trade_event(1), separators=(", ", " : ")),
        '{"event_type": "last\\u005ftrade_price"}',
        json.dumps({"event_type": "book", "last_trade_price": "0.1", "note": 'last_trade_price":'}),
    ],
)
def test_prefilter_keeps_lines_that_may_hold_a_trade(text: str) -> None:
    assert may_hold_trade(encode_record(record(text)))


def test_prefilter_skips_book_and_price_change_frames() -> None:
    for item in real_frames():
        if '"book"' in item["frame"] or '"price_change"' in item["frame"]:
            assert not may_hold_trade(encode_record(record(item["frame"]))), item["frame"][:60]


def test_scan_batch_counts_records_frames_trades_and_errors() -> None:
    lines = [
        encode_record(r).rstrip(b"\n")
        for r in [
            {"type": "conn_open", "ts_ns": BASE_NS, "conn": 0, "url": "wss://x"},
            record("PONG"),
            record(json.dumps(trade_event(1))),
            record(json.dumps(trade_event(2, price="2"))),
            record(json.dumps({"event_type": "book", "last_trade_price": "0.5"})),
        ]
    ]
    result = scan_batch(lines, segment="s", offset=9)
    assert (result.records, result.frames, len(result.rows), len(result.errors)) == (5, 4, 1, 1)


def test_scan_batch_raises_on_a_line_that_is_no_record() -> None:
    with pytest.raises(ValueError):
        scan_batch([b"{not json"])


# What scan_batch did before it searched whole batches: the per-line rule, kept here as
# the oracle the batch scanner must agree with on every input.
_OLD_TRADE_VALUE_RE = re.compile(rb'last_trade_price(?!\\"(?:[ \t\r\n]|\\[nrt])*:)')


def old_may_hold_trade(line: bytes) -> bool:
    return bool(
        _OLD_TRADE_VALUE_RE.search(line) or re.search(rb"\\u", line) or re.search(rb'"b64"', line)
    )


def old_scan_batch(lines: list[bytes], *, segment: str = "", offset: int = 0) -> BatchResult:
    result = BatchResult()
    for line in lines:
        result.records += 1
        if line.startswith(b'{"type":"frame",') and not old_may_hold_trade(line):
            result.frames += 1
            continue
        record = _decode_record(line)
        if record["type"] != "frame":
            continue
        result.frames += 1
        rows, errors = parse_frame(record, segment=segment, offset=offset)
        result.rows.extend(rows)
        result.errors.extend(errors)
    return result


def outcome(scan: Any, arg: Any) -> Any:
    try:
        result = scan(arg, segment="seg", offset=7)
    except ValueError:
        return "ValueError"
    return (result.records, result.frames, result.rows, result.errors)


trade_words = st.sampled_from(
    [
        "last_trade_price",
        'last_trade_price"',
        'last_trade_price":',
        'last_trade_price" :',
        "last\\u005ftrade_price",
        '"b64"',
        "\\u",
        "u",
        '{"type":"frame",',
        "\n",
    ]
)
line_texts = st.one_of(
    frame_texts, st.lists(st.one_of(trade_words, st.text(max_size=5)), max_size=6).map("".join)
)
wal_lines = st.one_of(
    st.builds(lambda t: encode_record(record(t)), line_texts),
    st.builds(lambda b: encode_record(frame(BASE_NS, 0, 0, b.encode("utf-8"))), line_texts),
    st.builds(lambda t: encode_record({"type": "sent", "ts_ns": BASE_NS, "text": t}), line_texts),
    st.builds(lambda t: encode_record({"ts_ns": BASE_NS, "type": "frame", "text": t}), line_texts),
    st.builds(lambda t: b'{"type":"frame",' + t.encode("utf-8", "surrogatepass"), line_texts),
    st.builds(lambda t: b'{"type":"frame","type":"sent","text":' + t.encode() + b"}", line_texts),
    st.binary(max_size=40),
).map(lambda line: line.rstrip(b"\n").replace(b"\n", b" "))


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(wal_lines, max_size=12))
def test_scan_batch_of_bytes_agrees_with_the_per_line_scan_on_any_lines(lines: list[bytes]) -> None:
    data = b"".join(line + b"\n" for line in lines)
    assert outcome(scan_batch, data) == outcome(old_scan_batch, lines)
    assert outcome(scan_batch, lines) == outcome(old_scan_batch, lines)


def test_scan_batch_agrees_with_the_per_line_scan_on_every_real_frame() -> None:
    lines = [encode_record(record(item["frame"])).rstrip(b"\n") for item in real_frames()]
    lines += [
        encode_record(frame(BASE_NS, 1, 2, item["frame"].encode())).rstrip(b"\n")
        for item in real_frames()
    ]
    data = b"".join(line + b"\n" for line in lines)
    assert outcome(scan_batch, data) == outcome(old_scan_batch, lines)
    for line in lines:
        assert outcome(scan_batch, line + b"\n") == outcome(old_scan_batch, [line])
    assert len(scan_batch(data).rows) == 4  # two real trades, as text and as binary


def test_scan_batch_finds_escapes_past_many_plain_u_bytes() -> None:
    text = json.dumps(trade_event(1)).replace("last", "l\\u0061st")
    lines = [
        encode_record(record("u" * (MAX_PLAIN_U + 5))).rstrip(b"\n"),
        encode_record(record(text)).rstrip(b"\n"),
    ]
    data = b"".join(line + b"\n" for line in lines)
    result = scan_batch(data)
    assert len(result.rows) == 1 and outcome(scan_batch, data) == outcome(old_scan_batch, lines)


def test_scan_batch_refuses_bytes_that_do_not_end_with_a_newline() -> None:
    with pytest.raises(ValueError, match="newline"):
        scan_batch(b'{"type":"frame","text":"x"}')


# The fast path (_fast_trade) against the reference (parse_trade_event): the same row
# for every event it takes, and it takes the events the feed sends.
digits = st.text(alphabet="0123456789", min_size=1, max_size=20)
plain_numbers = st.one_of(
    digits, st.builds(lambda a, b: f"{a}.{b}", digits, digits), digits.map(lambda d: "." + d)
)
number_texts = st.one_of(
    plain_numbers,
    st.sampled_from(["0", "1", "1.0", "1.0001", "0.5", "", ".", "1.", "-0.5", "+0.5", "1e-3"]),
    st.sampled_from(["0x1", " 0.5", "0.5 ", "\u0661", "NaN", "inf", "9" * 65]),
)
id_texts = st.one_of(
    st.sampled_from([DOC_TRADE["asset_id"], DOC_TRADE["market"], "", "x" * 257, "a\x00b"]),
    st.text(max_size=80),
)
feed_like = st.fixed_dictionaries(
    {"event_type": st.just("last_trade_price")},
    optional={
        "asset_id": id_texts | field_values,
        "market": id_texts | field_values,
        "price": number_texts | field_values,
        "size": number_texts | field_values,
        "side": st.sampled_from(["BUY", "SELL", "buy", ""]) | field_values,
        "timestamp": st.one_of(st.integers(0, MAX_TIME_MS * 2).map(str), digits, field_values),
        "fee_rate_bps": st.sampled_from(["0", "", "10", "0.5", None, "1e2"]) | field_values,
        "transaction_hash": id_texts | st.none(),
    },
)
record_times = st.one_of(
    st.integers(MIN_TIME_MS * 1_000_000 - 5, MAX_TIME_MS * 1_000_000 + 5),
    st.just(BASE_NS),
    st.none(),
    st.booleans(),
    st.floats(),
)


def reference(event: dict[str, Any], ts_ns: Any) -> Any:
    try:
        return parse_trade_event(event, received_ns=ts_ns)
    except InvalidTrade as exc:
        return exc.reason


@settings(max_examples=1500, deadline=None)
@given(event=feed_like, ts_ns=record_times)
def test_fast_trade_gives_the_reference_row_or_leaves_the_event_to_it(
    event: dict[str, Any], ts_ns: Any
) -> None:
    expected = reference(event, ts_ns)  # first: it remembers the fee rates it accepted
    row = _fast_trade(event, ts_ns)
    if row is not None:
        assert row == expected
        assert [type(v) for v in row] == [type(v) for v in expected]
    if not isinstance(expected, str):
        assert parse_trade(event, received_ns=ts_ns) == expected


@settings(max_examples=500, deadline=None)
@given(
    ms=st.integers(MIN_TIME_MS, MAX_TIME_MS),
    ns=st.integers(MIN_TIME_MS * 1_000_000, MAX_TIME_MS * 1_000_000),
    price=st.integers(0, 1000),
    size=st.integers(0, 10**9),
)
def test_fast_trade_takes_every_trade_shaped_like_the_feed(
    ms: int, ns: int, price: int, size: int
) -> None:
    event = {
        **DOC_TRADE,
        "price": f"{price / 1000:.3f}",
        "size": f"{size / 100}",
        "timestamp": str(ms),
        "transaction_hash": "0x" + "ab" * 32,
    }
    expected = parse_trade_event(event, received_ns=ns)
    assert _fast_trade(event, ns) == expected
    assert expected is not None and expected.ts == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(
        milliseconds=ms
    )


def test_every_real_trade_takes_the_fast_path() -> None:
    taken = 0
    for item in real_frames():
        for event in _events_of(item["frame"]):
            if event.get("event_type") == "last_trade_price":
                expected = reference(event, BASE_NS)
                if isinstance(expected, str):
                    continue
                assert _fast_trade(event, BASE_NS) == expected
                taken += 1
    assert taken >= 2  # the real frames hold two valid trades


def _events_of(text: str) -> list[dict[str, Any]]:
    try:
        value = json.loads(text)
    except ValueError:
        return []
    items = value if isinstance(value, list) else [value]
    return [item for item in items if isinstance(item, dict)]
