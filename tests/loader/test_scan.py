"""loader.scan: the C scan (loader/_scan.c) and its Python reference give the same lines
on every input, and those are the lines the per-line rules pick."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.mix import mix_texts
from loader import scan
from loader.parse import TradeRow, _decode_record, may_hold_trade, parse_frame, row_of
from loader.values import MAX_TIME_MS, MIN_TIME_MS
from tests.accel import not_built
from tests.loader.helpers import BASE_NS, real_frames
from tests.loader.test_parse import feed_like
from wal.records import FRAME_LINE_PREFIX, encode_frame, encode_record, frame, meta

NOT_BUILT = not_built("loader/_scan.c", "the loader scans the slower Python way")

# Pieces that make the rules' corner cases likely when strung together at random.
PIECES = [
    b"\n",
    FRAME_LINE_PREFIX,
    scan.TRADE_WORD,
    scan.TRADE_WORD[:9],
    scan.TRADE_WORD[9:],
    b'\\"',
    b'\\":',
    b" ",
    b"\t",
    b"\r",
    b"\\n",
    b"\\t",
    b"\\r",
    b"\\x",
    b":",
    b"\\",
    b"u",
    b"\\u",
    b'"b64"',
    b'"b6',
    b'4"',
    b'"type":"meta"',
    b'"type":"me',
    b"new_market",
    b"new_",
    b"market_resolved",
    b"market_reso",
    b"lv",
    b"la",
    b"w_",
    b'a"',
    b'{"type":"frame"',
    b"x" * 17,
    b"y" * 33,
]

# The accepted record times' bounds, in nanoseconds, either side (both fit in 63 bits).
RECORD_TIME_EDGES = [
    edge * 1_000_000 + d for edge in (MIN_TIME_MS, MAX_TIME_MS) for d in (-1, 0, 1)
]
TRADE_PIECES = [
    b'{"type":"frame","ts_ns":1786728467000000000,"conn":1,"n":0,"text":"',
    b'{\\"event_type\\":\\"last_trade_price\\"',
    b'\\"price\\":\\"0.5\\"',
    b'\\"size\\":\\"10\\"',
    b'\\"side\\":\\"BUY\\"',
    b'\\"timestamp\\":\\"1786728467000\\"',
    b'\\"asset_id\\":\\"1\\"',
    b'\\"market\\":\\"0x1\\"',
    b'\\"fee_rate_bps\\":\\"0\\"',
    b",",
    b"}",
    b'}"}',
]


def c_lines(data: bytes) -> scan.Lines:
    c = scan._C_LINES
    assert c is not None, NOT_BUILT
    return c(data)


def test_the_accelerator_is_built_and_in_use() -> None:
    assert scan.ACCELERATED and scan.lines is scan._C_LINES, NOT_BUILT


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(PIECES) | st.binary(max_size=20), max_size=40))
def test_c_and_python_agree_on_any_bytes(pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    assert c_lines(data) == scan.py_lines(data)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES), min_size=1, max_size=30), st.integers(0, 40))
def test_c_and_python_agree_at_every_alignment(pieces: list[bytes], pad: int) -> None:
    """The C scan reads 16 bytes at a time, then byte by byte: needles on every boundary."""
    data = b"z" * pad + b"".join(pieces)
    assert c_lines(data) == scan.py_lines(data)


def batch(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def test_the_lines_are_the_per_line_rules_on_real_frames_and_the_mix() -> None:
    records = [frame(BASE_NS, 1, 0, item["frame"]) for item in real_frames()]
    records += [frame(BASE_NS, 1, 0, item["frame"].encode()) for item in real_frames()]
    records += [frame(BASE_NS + i, 1, i, text) for i, text in enumerate(mix_texts(3000))]
    records.append(meta(BASE_NS, "https://gamma.example/markets", json.dumps({"id": "1"})))
    random.Random(7).shuffle(records)
    lines = [encode_record(record).rstrip(b"\n") for record in records]
    data = batch(lines)
    found = c_lines(data)
    assert found == scan.py_lines(data)
    starts = [0]
    for line in lines[:-1]:
        starts.append(starts[-1] + len(line) + 1)
    framed = [line.startswith(FRAME_LINE_PREFIX) for line in lines]
    assert (found.records, found.frames) == (len(lines), sum(framed))
    expected = [
        start
        for start, line, is_frame in zip(starts, lines, framed, strict=True)
        if may_hold_trade(line) or not is_frame
    ]
    assert found.decode == expected
    markets = [s for s, line in zip(starts, lines, strict=True) if b"new_market" in line]
    assert set(markets) <= set(found.markets) and found.markets


def test_a_frames_only_batch_decodes_only_the_trade_lines() -> None:
    texts = mix_texts(500)
    lines = [encode_record(frame(BASE_NS, 1, i, t)).rstrip(b"\n") for i, t in enumerate(texts)]
    found = c_lines(batch(lines))
    trades = [i for i, t in enumerate(texts) if '"event_type":"last_trade_price"' in t]
    assert len(found.decode) == len(trades) > 0
    assert found.markets == [] and found.frames == found.records == 500


# trade_fields: the C reading of a trade line against the Python path's row.
def python_rows(line: bytes) -> Any:
    try:
        return parse_frame(_decode_record(line))[0]
    except ValueError as exc:
        return str(exc)


def c_rows(line: bytes) -> list[TradeRow] | None:
    assert scan.trade_fields is not None, NOT_BUILT
    fields = scan.trade_fields(line + b"\n", 0, len(line))
    if fields is None:
        return None
    row = row_of(fields)
    return None if row is None else [row]


@settings(max_examples=2000, deadline=None)
@given(
    event=feed_like,
    ts_ns=st.integers(0, 2**64) | st.just(BASE_NS) | st.sampled_from(RECORD_TIME_EDGES),
    conn=st.integers(0, 2**63),
    compact=st.booleans(),
    wrap=st.sampled_from(["{}", "[{}]", " {} ", "{}x"]),
)
def test_trade_fields_give_the_python_row_or_leave_the_line_to_it(
    event: dict[str, Any], ts_ns: int, conn: int, compact: bool, wrap: str
) -> None:
    text = json.dumps(event, separators=(",", ":") if compact else None)
    text = wrap.replace("{}", text, 1)
    line = encode_frame(ts_ns, conn, 0, text).rstrip(b"\n")
    expected = python_rows(line)  # first: it remembers the fee rates it accepted
    got = c_rows(line)
    if got is not None:
        assert got == expected
        assert [type(v) for v in got[0]] == [type(v) for v in expected[0]]
        assert scan.trade_fields(line, 0, len(line))[:2] == (conn, ts_ns)  # type: ignore[index,misc]


@settings(max_examples=500, deadline=None)
@given(line=st.lists(st.sampled_from(PIECES + TRADE_PIECES) | st.binary(max_size=8), max_size=30))
def test_trade_fields_never_take_a_line_python_reads_otherwise(line: list[bytes]) -> None:
    data = b"".join(line).replace(b"\n", b" ")
    got = c_rows(data)
    if got is not None:
        assert got == python_rows(data)


def test_trade_fields_take_the_feed_s_trades() -> None:
    taken = 0
    for i, text in enumerate(mix_texts(2000)):
        line = encode_frame(BASE_NS + i, 1, i, text).rstrip(b"\n")
        if '"event_type":"last_trade_price"' in text:
            expected = python_rows(line)  # first: it remembers the fee rates it accepted
            assert c_rows(line) == expected != []
            taken += 1
    assert taken > 50
    for item in real_frames():
        line = encode_frame(BASE_NS, 1, 0, item["frame"]).rstrip(b"\n")
        rows = python_rows(line)
        if rows and not isinstance(rows, str) and not item["frame"].startswith("["):
            assert c_rows(line) == rows


def test_trade_fields_refuse_bounds_outside_the_data() -> None:
    assert scan.trade_fields is not None, NOT_BUILT
    with pytest.raises(ValueError):
        scan.trade_fields(b"abc", 2, 9)
    with pytest.raises(ValueError):
        scan.trade_fields(b"abc", -1, 2)


def test_trade_fields_keep_to_the_accepted_record_times() -> None:
    texts = [t for t in mix_texts(400) if '"event_type":"last_trade_price"' in t]
    text = texts[0]
    for ts_ns in RECORD_TIME_EDGES:
        line = encode_frame(ts_ns, 1, 0, text).rstrip(b"\n")
        expected = python_rows(line)
        assert c_rows(line) in (None, expected)
        inside = MIN_TIME_MS * 1_000_000 <= ts_ns <= MAX_TIME_MS * 1_000_000
        assert (c_rows(line) is not None) == inside, ts_ns
