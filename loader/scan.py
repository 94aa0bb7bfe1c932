"""Which lines of a zstd frame's bytes the loader must decode in Python. Pure.

A batch is whole WAL lines. Most lines are book frames that hold no trade; decoding each
in Python would cost more than decompressing it. :func:`lines` finds the few worth
decoding by byte searches over the whole batch, each of which cannot span a line:

- for trades (``decode``): a line where :data:`TRADE_WORD` occurs other than as a key
  (book events carry a ``last_trade_price`` key; a key is the word followed by an
  escaped quote, blanks or escaped blanks, and a colon), a line holding a ``\\u``
  escape (it could spell the word otherwise) or a ``"b64"`` key (base64 hides it), and,
  when some line lacks the writer's frame prefix, each such line (a record of another
  type, for coverage, or no record at all, which makes the segment corrupt);
- for market metadata (``markets``): a line holding one of :data:`MARKET_NEEDLES`.

Of the trade lines, most are one trade event as the feed sends it; :data:`trade_fields`
reads those in C without decoding them into Python objects first, and
:data:`price_change_fields` does the same for price changes (loader.bookscan).

The searches run in C (``loader/_scan.c``, built by ``pip install`` where a C compiler
is) or else in Python (:func:`py_lines`), with the same answers on every input:
tests/loader/test_scan.py holds the two together. :data:`ACCELERATED` says which.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

from wal import native
from wal.records import FRAME_LINE_PREFIX, count_frame_lines, count_lines

TRADE_WORD = b"last_trade_price"
KEY_TAIL = rb'\\"(?:[ \t\r]|\\[nrt])*:'  # raw "\n" needs no place here: no line holds one
TRADE_VALUE_RE = re.compile(re.escape(TRADE_WORD) + b"(?!" + KEY_TAIL + b")")
ESCAPE = b"\\u"
B64_KEY = b'"b64"'
# A meta record, or a frame naming new_market or market_resolved. A \u escape could
# hide the event names; the feed sends none there, and a miss only delays metadata
# until the next Gamma listing (it never touches trades).
MARKET_NEEDLES = (b'"type":"meta"', b"new_market", b"market_resolved")
_NOT_FRAME_LINE_RE = re.compile(b"\n(?!" + re.escape(FRAME_LINE_PREFIX) + b")")
# Past this many "u" bytes that start no escape in one batch (English text), let one
# C search find the escapes instead of looking at each "u" in Python.
MAX_PLAIN_U = 64


class Lines(NamedTuple):
    """What :func:`lines` finds in one batch."""

    records: int  # its newlines
    frames: int  # its lines that start with wal.records.FRAME_LINE_PREFIX
    decode: list[int]  # start offsets, ascending, of the lines to decode for trades
    markets: list[int]  # start offsets, ascending, of the lines that may hold metadata


def py_lines(data: bytes) -> Lines:
    """:func:`lines` in Python: the reference the C version is held to."""
    records, frames = count_lines(data), count_frame_lines(data)
    decode: set[int] = set()
    _mark_trade_lines(data, _marker(data, decode))
    if frames != records:
        if not data.startswith(FRAME_LINE_PREFIX):
            decode.add(0)
        decode.update(m.end() for m in _NOT_FRAME_LINE_RE.finditer(data))
        decode.discard(len(data))  # after the last newline: no line
    markets: set[int] = set()
    mark = _marker(data, markets)
    for needle in MARKET_NEEDLES:
        _mark_each(data, needle, mark)
    return Lines(records, frames, sorted(decode), sorted(markets))


def _marker(data: bytes, starts: set[int]) -> Callable[[int], int]:
    def line_of(pos: int) -> int:
        """Mark the line holding ``pos``; return its end (where to search on)."""
        starts.add(data.rfind(b"\n", 0, pos) + 1)
        end = data.find(b"\n", pos)
        return end if end >= 0 else len(data)

    return line_of


def _mark_trade_lines(data: bytes, line_of: Callable[[int], int]) -> None:
    end = -1
    for match in TRADE_VALUE_RE.finditer(data):  # the keys are passed over in C
        if match.start() > end:  # a line already marked needs no second look
            end = line_of(match.start())
    _mark_escapes(data, line_of)
    _mark_each(data, B64_KEY, line_of)


def _mark_each(data: bytes, needle: bytes, line_of: Callable[[int], int]) -> None:
    pos = data.find(needle)
    while pos >= 0:
        pos = data.find(needle, line_of(pos))


def _mark_escapes(data: bytes, line_of: Callable[[int], int]) -> None:
    """Mark every line holding a ``\\u``: by the rare "u" byte (one memchr), or past
    MAX_PLAIN_U plain ones by the two bytes."""
    find, plain = data.find, 0
    pos = find(b"u", 1)
    while pos >= 0 and plain < MAX_PLAIN_U:
        if data[pos - 1] == 0x5C:  # a backslash
            pos = line_of(pos)
        else:
            plain += 1
        pos = find(b"u", pos + 1)
    if pos >= 0:
        pos = find(ESCAPE, pos - 1)
        while pos >= 0:
            pos = find(ESCAPE, line_of(pos))


_SAMPLE_LINE = (
    b'{"type":"frame","ts_ns":1786728467000000001,"conn":2,"n":3,"text":"{\\"asset_id'
    b'\\":\\"7\\",\\"event_type\\":\\"last_trade_price\\",\\"market\\":'
    b'\\"0x1\\",\\"price\\":\\"0.5\\",\\"side\\":\\"SELL\\",\\"size'
    b'\\":\\"2\\",\\"timestamp\\":\\"1786728467000\\"}"}'
)
_SAMPLE_TRADE = (_SAMPLE_LINE, 0, len(_SAMPLE_LINE))
_SAMPLE_FIELDS = (2, 1786728467000000001, 1786728467000, "7", "SELL", 0.5, 2.0, "0x1", None, None)


def _fits(built: Any) -> bool:
    constants = {
        "frame_prefix": FRAME_LINE_PREFIX,
        "trade_word": TRADE_WORD,
        "escape": ESCAPE,
        "b64_key": B64_KEY,
        "market_needles": MARKET_NEEDLES,
    }
    return bool(constants == built.CONSTANTS and built.trade(*_SAMPLE_TRADE) == _SAMPLE_FIELDS)


_scan: Any = native.module("loader._scan", _fits)


def _c_lines(data: bytes) -> Lines:
    return Lines(*_scan.lines(data))


_C_LINES = _c_lines if _scan is not None else None
ACCELERATED = _C_LINES is not None
lines: Callable[[bytes], Lines] = _C_LINES or py_lines
# trade_fields(data, start, end): for the line data[start:end] when it is a text frame of
# one trade event shaped as the feed sends it, (conn, ts_ns, ms, asset_id, side, price,
# size, market, fee_rate_bps, transaction_hash) as loader.parse._fast_trade reads them;
# else None (and always None without the C build), and the line is decoded in Python.
trade_fields: Callable[[bytes, int, int], tuple[Any, ...] | None] | None = None
# price_change_fields(data, start, end, row_type, event_time, received_time): the same for
# a text frame of price_change events of the current format (one, or an array of them)
# as loader.bookscan's fast path takes them: (conn, rows), the rows that path gives
# (row_type: loader.books.ChangeRow; ts = event_time(ms), received_at =
# received_time(ts_ns)); else None.
price_change_fields: Callable[..., tuple[Any, ...] | None] | None = None
# book_copy(data, changes, quotes, segment_id, keys, token_key): every line of the batch
# data that price_change_fields takes, and every line of best_bid_ask events that
# loader.bookscan.fast_quote would take, as COPY rows of price_change_rows and
# best_bid_ask_rows appended to the bytearrays changes and quotes (loader.bookcopy),
# but for a line with a token that keys holds with another market;
# (taken, change_rows, quote_rows, first_ms, last_ms, rest), rest the start offsets of
# the other lines. None without the C build.
book_copy: Callable[..., tuple[Any, ...]] | None = None
if _scan is not None:
    trade_fields, price_change_fields = _scan.trade, _scan.price_changes
    book_copy = _scan.book_copy
