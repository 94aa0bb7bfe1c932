"""Trade parsing: WAL ``frame`` records in, ``trades`` rows out. Pure: no I/O, no clock.

Only ``last_trade_price`` events are trades. A frame is one JSON object, an array of
them, or plain control text (``PONG``, ``INVALID OPERATION``, ``NO NEW ASSETS``); text
that is not JSON, ``[]`` and every other event type are normal and yield nothing. An
event that says it is a trade but cannot be one is a :class:`ParseError` value, never
an exception to the caller: the other events of the frame still load.

Bump :data:`PARSER_VERSION` whenever the rows produced for some input change; it is
stored per segment so ``loader reparse --stale`` can find what an older parser loaded.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

import orjson

from loader import scan, values
from loader.scan import B64_KEY, ESCAPE, TRADE_VALUE_RE
from loader.values import (
    KNOWN_FEES,
    MAX_TIME_MS,
    MIN_TIME_MS,
    InvalidTrade,
    from_ms,
    from_us,
    plain_decimal,
    plain_id,
)
from wal.records import FRAME_LINE_PREFIX

PARSER_VERSION = 1

TRADE_EVENT = "last_trade_price"
SIDES = frozenset({"BUY", "SELL"})
CONTROL_TEXTS = frozenset({"PONG", "INVALID OPERATION", "NO NEW ASSETS"})

# Prices are a few thousand distinct texts at most (ticks of 0.001 and 0.0001).
MAX_CACHED_PRICES = 16_384
_PRICE_BY_TEXT: dict[str, float] = {}
_new_row = tuple.__new__  # TradeRow(...) less the call of its Python-level __new__


class TradeRow(NamedTuple):
    """One ``trades`` row, in COPY column order (``segment_id`` is added by the loader)."""

    ts: datetime
    token_id: str
    side: str
    price: float
    size: float
    trade_id: None
    market: str
    fee_rate_bps: Decimal | None
    transaction_hash: str | None
    received_at: datetime | None


COLUMNS = TradeRow._fields


@dataclass(frozen=True)
class ParseError:
    """An invalid trade event: where it was and why it was refused."""

    reason: str
    segment: str = ""
    offset: int = 0  # byte offset of the zstd frame holding the record
    event: str = ""  # the start of the event, for the log


@dataclass
class BatchResult:
    """What one batch of WAL lines (one zstd frame) holds."""

    rows: list[TradeRow] = field(default_factory=list)
    errors: list[ParseError] = field(default_factory=list)
    records: int = 0
    frames: int = 0
    markets: list[Any] = field(default_factory=list)  # loader.markets observations
    # For coverage (loader.coverage): the non-frame records, each with the number of
    # rows before it; per frame that gave rows, (index of its first row, conn, ts_ns);
    # and the ts_ns of the batch's last line when it is a frame. Per record, not per row.
    others: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    sources: list[tuple[int, int, int]] = field(default_factory=list)
    last_frame_ns: int | None = None


def parse_trade_event(event: dict[str, Any], *, received_ns: int | None = None) -> TradeRow | None:
    """The trade in ``event``, None when it is another event type.

    Raises InvalidTrade when the event is a ``last_trade_price`` that cannot be a trade.
    """
    if event.get("event_type") != TRADE_EVENT:
        return None
    price = values.number(event, "price")
    if not 0.0 <= price <= 1.0:
        raise InvalidTrade(f"price {price!r} is outside [0, 1]")
    size = values.number(event, "size")
    if size < 0.0:
        raise InvalidTrade(f"size {size!r} is negative")
    side = event.get("side")
    if not isinstance(side, str) or side not in SIDES:
        raise InvalidTrade(f"side {values.short(side)} is not BUY or SELL")
    return TradeRow(  # positional: measurably faster than keywords on the hot path
        values.timestamp(event.get("timestamp")),
        values.text(event, "asset_id"),
        side,
        price,
        size,
        None,
        values.text(event, "market"),
        values.fee(event.get("fee_rate_bps")),
        values.optional_text(event, "transaction_hash"),
        None if received_ns is None else values.received_at(received_ns),
    )


def parse_frame(
    record: dict[str, Any], *, segment: str = "", offset: int = 0
) -> tuple[list[TradeRow], list[ParseError]]:
    """The trades in one ``frame`` record, and the trade events that were invalid.

    Each event goes to :func:`parse_trade`.
    """
    rows: list[TradeRow] = []
    errors: list[ParseError] = []
    ts_ns = record.get("ts_ns")
    for event in _events(record):
        try:
            row = parse_trade(event, received_ns=ts_ns)
        except InvalidTrade as exc:
            errors.append(ParseError(exc.reason, segment, offset, values.short(event, 200)))
            continue
        if row is not None:
            rows.append(row)
    return rows, errors


def parse_trade(event: dict[str, Any], *, received_ns: int | None = None) -> TradeRow | None:
    """:func:`parse_trade_event`, by the fast path where it applies (same result)."""
    if event.get("event_type") != TRADE_EVENT:
        return None
    row = _fast_trade(event, received_ns)
    return row if row is not None else parse_trade_event(event, received_ns=received_ns)


def _fast_trade(event: dict[str, Any], received_ns: Any) -> TradeRow | None:
    """parse_trade_event's row for a trade event of the shape the feed sends (every
    number a plain decimal string, ASCII ids, a fee rate seen before, a record time);
    None for anything else, which the caller then gives to parse_trade_event.

    Every test here is one that parse_trade_event makes, or a narrower one; the
    property tests in tests/loader/test_parse.py hold the two to the same rows.
    """
    price_text, size_text = event.get("price"), event.get("size")
    stamp, side = event.get("timestamp"), event.get("side")
    if (
        type(price_text) is not str
        or type(size_text) is not str
        or type(stamp) is not str
        or type(received_ns) is not int
        or (side != "BUY" and side != "SELL")
    ):
        return None
    price = _PRICE_BY_TEXT.get(price_text)
    if price is None:
        price = plain_decimal(price_text)
        if price is None or price > 1.0:
            return None
        if len(_PRICE_BY_TEXT) >= MAX_CACHED_PRICES:
            _PRICE_BY_TEXT.clear()
        _PRICE_BY_TEXT[price_text] = price
    size = plain_decimal(size_text)
    if size is None or not (len(stamp) <= 16 and stamp.isascii() and stamp.isdigit()):
        return None
    ms = int(stamp)
    token, market = event.get("asset_id"), event.get("market")
    tx = event.get("transaction_hash")
    if (
        not MIN_TIME_MS <= ms <= MAX_TIME_MS
        or not MIN_TIME_MS * 1_000_000 <= received_ns <= MAX_TIME_MS * 1_000_000
        or not plain_id(token)
        or not plain_id(market)
        or not (tx is None or tx == "" or plain_id(tx))
    ):
        return None
    fee_text = event.get("fee_rate_bps")
    if fee_text is None or fee_text == "":
        fee_rate = None
    elif type(fee_text) is str:
        fee_rate = KNOWN_FEES.get(fee_text)
        if fee_rate is None:  # not seen yet: parse_trade_event checks it and remembers it
            return None
    else:
        return None
    return _new_row(
        TradeRow,
        (
            from_ms(ms),
            token,
            side,
            price,
            size,
            None,
            market,
            fee_rate,
            tx or None,
            from_us(received_ns // 1000),
        ),
    )


def row_of(fields: tuple[Any, ...]) -> TradeRow | None:
    """The row of a trade line from the fields loader.scan.trade_fields gave (what
    _fast_trade gives for that event); None for a fee rate not seen yet."""
    _conn, ts_ns, ms, token, side, price, size, market, fee_text, tx = fields
    if fee_text is None:
        fee_rate = None
    else:
        fee_rate = KNOWN_FEES.get(fee_text)
        if fee_rate is None:  # parse_trade_event checks it first, then remembers it
            return None
    received = from_us(ts_ns // 1000)
    return _new_row(
        TradeRow, (from_ms(ms), token, side, price, size, None, market, fee_rate, tx, received)
    )


def may_hold_trade(line: bytes) -> bool:
    """False only when the raw WAL line provably holds no ``last_trade_price`` event.

    A trade needs the bytes ``last_trade_price`` as the event_type value. A ``\\u``
    escape could spell them differently and base64 hides them, so either means True.
    Every other occurrence followed by an (escaped) quote and a colon is a key.
    """
    return bool(TRADE_VALUE_RE.search(line) or ESCAPE in line or B64_KEY in line)


def scan_batch(
    batch: bytes | Sequence[bytes],
    *,
    segment: str = "",
    offset: int = 0,
    found: scan.Lines | None = None,
) -> BatchResult:
    """Parse one zstd frame's records: its bytes (whole lines, each ending in ``\\n``),
    or its lines without their ``\\n``. Raises ValueError on a line that is no record.

    The same rows, errors and counts as decoding line by line with may_hold_trade as
    the filter, found without looking at each line in Python: ``records`` counts the
    newlines; ``frames`` counts the lines that start with the writer's frame prefix
    (wal.records) and corrects the count for each line that is decoded. A line is
    decoded exactly when the per-line rule would: it lacks that prefix, or
    may_hold_trade holds for it. Each test of may_hold_trade is for bytes that cannot
    span a newline (the key-tail class leaves raw newlines out), so searching the whole
    batch once for each and taking the lines the hits fall in finds the same lines
    (loader.scan, in C where it is built). ``found``: what loader.scan.lines gave for
    these bytes, when the caller already asked.
    """
    data = batch if isinstance(batch, bytes) else b"".join(line + b"\n" for line in batch)
    if data and not data.endswith(b"\n"):
        raise ValueError("a batch is whole lines, each ending in a newline")
    if found is None:
        found = scan.lines(data)
    result = BatchResult(records=found.records, frames=found.frames)
    fast = scan.trade_fields
    for start in found.decode:
        end = data.index(b"\n", start)
        fields = fast(data, start, end) if fast is not None else None
        if fields is not None:
            row = row_of(fields)
            if row is not None:  # a frame line, so the frame count stands
                result.sources.append((len(result.rows), fields[0], fields[1]))
                result.rows.append(row)
                continue
        line = data[start:end]
        if line.startswith(FRAME_LINE_PREFIX):
            result.frames -= 1  # counted from its bytes above; counted by its type below
        record = _decode_record(line)
        if record["type"] != "frame":
            result.others.append((len(result.rows), record))
            continue
        result.frames += 1
        rows, errors = parse_frame(record, segment=segment, offset=offset)
        if rows:
            result.sources.append(
                (len(result.rows), record.get("conn", -1), record.get("ts_ns", 0))
            )
        result.rows.extend(rows)
        result.errors.extend(errors)
    result.last_frame_ns = _last_frame_ns(data)
    return result


def _last_frame_ns(data: bytes) -> int | None:
    """The ts_ns of the last line when the writer wrote it as a frame (its second key)."""
    start = data.rfind(b"\n", 0, len(data) - 1) + 1
    if not data.startswith(FRAME_LINE_PREFIX + b'"ts_ns":', start):
        return None
    digits = start + len(FRAME_LINE_PREFIX) + 8
    end = data.find(b",", digits, digits + 24)
    try:
        return int(data[digits:end]) if end > 0 else None
    except ValueError:
        return None


def _loads(data: bytes | str) -> Any:
    """JSON as the standard library reads it; orjson first, as it is about 4x faster.

    orjson refuses what the standard library accepts beyond RFC 8259 (NaN, lone
    surrogate escapes, which the WAL writes for such strings); those take the slow way.
    It reads integers beyond 64 bits as floats, which no accepted trade field can be.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def _decode_record(line: bytes) -> dict[str, Any]:
    """A WAL line as a record (the rules of wal.records.decode_line). ValueError if not."""
    try:
        record = _loads(line)
    except RecursionError:
        raise ValueError("line nests too deeply to be a record") from None
    if not isinstance(record, dict) or not isinstance(record.get("type"), str):
        raise ValueError("line is not a JSON object with a string 'type'")
    return record


def _events(record: dict[str, Any]) -> list[dict[str, Any]]:
    text = _frame_text(record)
    if text is None or text in CONTROL_TEXTS:
        return []
    try:
        value = _loads(text)
    except (ValueError, RecursionError):
        return []  # not JSON: control text we do not know yet, never a trade
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, dict)]
    return []


def _frame_text(record: dict[str, Any]) -> str | None:
    text = record.get("text")
    if isinstance(text, str):
        return text
    b64 = record.get("b64")
    if not isinstance(b64, str):
        return None
    try:
        return base64.b64decode(b64, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
