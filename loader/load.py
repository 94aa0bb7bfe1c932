"""Loading one segment: read its zstd frames, parse them, COPY the trades, move the offset.

``SegmentLoader.load`` continues a segment from its committed offset in transactions of
about ``batch_trades`` trades; each commits the trades and the new offset together, so a
crash anywhere resumes exactly where the last commit left off. ``reload`` (reparse)
deletes a segment's rows and loads it again from byte 0 in a single transaction.
A corrupt segment keeps every trade of the frames before the damage and is marked
``corrupt`` with the offset and cause.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from loader import bookload, bookstore, carry, marketstore, scan, store
from loader.books import BookResult
from loader.bookscan import scan_books
from loader.bookstore import BookPending
from loader.coverage import Coverage
from loader.db import Stopped
from loader.errors import ConcurrentLoadError
from loader.gaps import Gap
from loader.markets import MarketObservation, scan_markets
from loader.parse import PARSER_VERSION, BatchResult, ParseError, TradeRow, scan_batch
from loader.prefetch import Prefetch
from loader.scan import Lines
from loader.store import Pending, SegmentState
from wal import CorruptSegmentError, SegmentReader

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_BATCH_TRADES = 20_000  # trades per transaction; see bench/loader.py
# Commit at least every this many zstd frames, so a segment with few trades still
# advances its committed offset (and a crash re-reads little).
MAX_FRAMES_PER_TXN = 2_000
READ_AHEAD = 4  # zstd frames read, decompressed and scanned ahead of their decoding
MAX_LOGGED_ERRORS = 5  # invalid trades logged per segment; the rest are only counted
# Book rows per transaction with --books: price changes stream into their COPY, the
# others are buffered until it is done (one COPY at a time per connection).
DEFAULT_BATCH_BOOK_ROWS = 100_000


@dataclass(frozen=True)
class Parser:
    """The parser a load uses: its version and its batch scanner."""

    version: int = PARSER_VERSION
    scan: Callable[..., BatchResult] = scan_batch
    scan_books: Callable[..., tuple[BatchResult, BookResult]] = scan_books


CURRENT_PARSER = Parser()


@dataclass(frozen=True)
class Outcome:
    """How loading one segment ended: ``loaded``, ``corrupt`` or ``stopped``."""

    name: str
    status: str
    trades: int = 0
    parse_errors: int = 0
    error: str | None = None
    error_offset: int | None = None  # where a corrupt segment's damage starts


def read_batches(path: Path, start: int, parser: Parser) -> Iterator[tuple[int, BatchResult]]:
    """``(end_offset, parsed batch)`` for each zstd frame from ``start``.

    Raises CorruptSegmentError at the first damaged frame, or at a line that is no record;
    SegmentChangedError when the file shrinks or is rewritten while it is read; OSError
    when it cannot be read. The parser gets each frame's bytes, whole lines.
    """
    for end, data, found, result in _scanned(path, start, parser.scan):
        result.markets = scan_markets(data, found.markets)
        yield end, result


Both = tuple[BatchResult, BookResult]


def read_book_batches(
    path: Path, start: int, parser: Parser, segment_id: int | None = None
) -> Iterator[tuple[int, Both]]:
    """As :func:`read_batches`, with each frame's trades and book rows; given the
    segment's id, price changes come as COPY rows where they can (loader.bookcopy)."""
    scan_books = functools.partial(parser.scan_books, segment_id=segment_id)
    for end, data, found, result in _scanned(path, start, scan_books):
        result[0].markets = scan_markets(data, found.markets)
        yield end, result


def _scanned(
    path: Path, start: int, parse_batch: Callable[..., T]
) -> Iterator[tuple[int, bytes, Lines, T]]:
    """``(end_offset, bytes, lines, parse_batch(bytes))`` per zstd frame; a line that is
    no record makes the segment corrupt at that frame.

    Reading, decompressing and finding the lines worth decoding (loader.scan) run a few
    frames ahead in a thread: all three release the GIL, so they overlap the decoding
    in Python. Errors reach the caller in order, after the frames before them.
    """
    reader = SegmentReader(path, tolerate_torn_tail=False)
    ahead = ((batch, scan.lines(batch.data)) for batch in reader.batches(start))
    with Prefetch(ahead, depth=READ_AHEAD) as batches:
        for batch, found in batches:
            try:
                result = parse_batch(
                    batch.data, segment=path.name, offset=batch.offset, found=found
                )
            except (UnicodeDecodeError, ValueError) as exc:
                raise CorruptSegmentError(
                    path, batch.offset, f"a line is not a record: {exc}"
                ) from None
            yield batch.end, batch.data, found, result


class SegmentLoader:
    """Loads segments over one connection. ``stop`` ends work at the next safe point."""

    def __init__(
        self,
        conn: psycopg.Connection,
        *,
        stop: threading.Event,
        parser: Parser = CURRENT_PARSER,
        batch_trades: int = DEFAULT_BATCH_TRADES,
        books: bool = False,
        batch_book_rows: int = DEFAULT_BATCH_BOOK_ROWS,
    ) -> None:
        self.conn = conn
        self.stop = stop
        self.parser = parser
        self.batch_trades = batch_trades
        self.books = books
        self.batch_book_rows = batch_book_rows
        self.keys = store.KeyBook()
        self._logged = 0
        self.logged_books = 0
        self._markets: list[MarketObservation] = []  # of the open transaction
        self._reset_markets: set[str] = set()  # markets a reparse's DELETE touched

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """A transaction whose new token keys count as known only once it committed."""
        try:
            with self.conn.transaction():
                yield
        except BaseException:
            self.keys.discard()
            self._markets, self._reset_markets = [], set()
            raise
        self.keys.confirm()

    def load(self, path: Path, state: SegmentState) -> Outcome:
        """Continue ``path`` from its committed offset to its end (or a stop)."""
        self._logged = 0
        if self.books and not bookload.backfill(self, path, state.id):
            return Outcome(path.name, "stopped")
        committed, total = state.offset_bytes, Pending(end=state.offset_bytes)
        cover: Coverage | None = None
        with Prefetch(self._read(path, committed, state.id)) as ahead:
            batches = iter(ahead)
            while True:
                pending = Pending(end=committed)
                books = BookPending(end=committed) if self.books else None
                with self.transaction():
                    store.check_unchanged(store.lock_segment(self.conn, state.id), committed)
                    if books is not None:
                        check_books(bookstore.lock_books(self.conn, state.id), committed)
                    if cover is None:
                        cover = carry.load(self.conn, state.id, state.name, committed)
                    gaps: list[Gap] = []
                    status, error = self._fill_any(
                        batches, state.id, pending, books, (cover, gaps), bounded=True
                    )
                    self._finish(state.id, pending, books, (cover, gaps), status, error)
                committed = pending.end
                _merge(total, pending)
                if status != "loading" or self.stop.is_set():
                    break
        if status == "loading":
            status = "stopped"
        return _outcome(path, status, total, error)

    def reload(self, path: Path, state: SegmentState) -> Outcome:
        """Delete the segment's rows and load it again from byte 0, in one transaction."""
        self._logged = self.logged_books = 0
        pending = Pending(end=0)
        books = BookPending(end=0) if self.books else None
        with self.transaction():
            current = store.lock_segment(self.conn, state.id)
            store.reset_segment(self.conn, current, self.parser.version)
            self._reset_markets = marketstore.reset(self.conn, state.id)
            carry.reset(self.conn, state.id)
            if books is not None:
                bookstore.reset_books(self.conn, bookstore.lock_books(self.conn, state.id))
            cover = carry.load(self.conn, state.id, state.name, 0)
            gaps: list[Gap] = []
            with Prefetch(self._read(path, 0, state.id)) as ahead:
                status, error = self._fill_any(
                    iter(ahead), state.id, pending, books, (cover, gaps), bounded=False
                )
            self._finish(state.id, pending, books, (cover, gaps), status, error)
        return _outcome(path, status, pending, error)

    def _read(self, path: Path, start: int, segment_id: int) -> Iterator[tuple[int, Any]]:
        """The parsed batches from ``start``: with book rows when --books is on."""
        if self.books:
            return read_book_batches(path, start, self.parser, segment_id)
        return read_batches(path, start, self.parser)

    def _fill_any(
        self,
        batches: Iterator[tuple[int, Any]],
        segment_id: int,
        pending: Pending,
        books: BookPending | None,
        coverage: tuple[Coverage, list[Gap]],
        *,
        bounded: bool,
    ) -> tuple[str, tuple[int, str] | None]:
        if books is not None:
            return self._fill_both(batches, segment_id, pending, books, coverage, bounded=bounded)
        with store.trade_copy(self.conn, segment_id, self.keys) as write:
            return self._fill(batches, pending, write, *coverage, bounded=bounded)

    def _finish(
        self,
        segment_id: int,
        pending: Pending,
        books: BookPending | None,
        coverage: tuple[Coverage, list[Gap]],
        status: str,
        error: tuple[int, str] | None,
    ) -> None:
        """Gaps, markets, offsets and counts of the transaction, after its COPYs."""
        self._cover(segment_id, *coverage, finished=status != "loading")
        self._record(segment_id, pending, status, error)
        if books is not None:
            bookstore.record_books(self.conn, segment_id, books)

    def _fill(
        self,
        batches: Iterator[tuple[int, BatchResult]],
        pending: Pending,
        write: Callable[[list[TradeRow]], None],
        cover: Coverage,
        gaps: list[Gap],
        *,
        bounded: bool = False,
    ) -> tuple[str, tuple[int, str] | None]:
        """Parse and write batches into the open COPY. Returns (status, corruption).

        ``cover`` decides which rows of a batch load (one per trade across replicas) and
        adds the gaps the batch's records ended to ``gaps``.

        ``bounded`` (run): stop after ``batch_trades`` trades, MAX_FRAMES_PER_TXN frames or
        a stop request, with status ``loading``. Unbounded (reparse): a stop request
        raises Stopped, which rolls the transaction back.
        """
        frames = 0
        try:
            for end, result in batches:
                result.rows, ended = cover.feed(result)
                gaps.extend(ended)
                write(result.rows)
                pending.add(end, result)
                self._markets.extend(result.markets)
                self._log_errors(result.errors)
                frames += 1
                if bounded and (
                    pending.trades >= self.batch_trades
                    or frames >= MAX_FRAMES_PER_TXN
                    or self.stop.is_set()
                ):
                    return "loading", None
                if not bounded and self.stop.is_set():
                    raise Stopped()
        except CorruptSegmentError as exc:
            log.error("segment %s is corrupt: %s", exc.path.name, exc)
            return "corrupt", (exc.offset, exc.cause)
        return "loaded", None

    def _cover(self, segment_id: int, cover: Coverage, gaps: list[Gap], *, finished: bool) -> None:
        """Write the gaps and the state of this transaction (after its COPY ended)."""
        carry.write_gaps(self.conn, segment_id, gaps + (cover.open_gaps() if finished else []))
        carry.save(self.conn, segment_id, cover)

    def _record(
        self, segment_id: int, pending: Pending, status: str, error: tuple[int, str] | None
    ) -> None:
        marketstore.write(self.conn, segment_id, self._markets, self._reset_markets)
        self._markets, self._reset_markets = [], set()
        store.record_progress(
            self.conn,
            segment_id,
            pending,
            status=status,
            parser_version=self.parser.version,
            error=error,
        )

    # --- with --books: trades and book rows of the same frames in one transaction ---

    def _fill_both(
        self,
        batches: Iterator[tuple[int, Both]],
        segment_id: int,
        pending: Pending,
        books: BookPending,
        coverage: tuple[Coverage, list[Gap]],
        *,
        bounded: bool,
    ) -> tuple[str, tuple[int, str] | None]:
        """As :meth:`_fill`: price changes stream into their COPY as they are parsed; trades
        and the other book rows are buffered and copied after it, in turn."""
        cover, gaps = coverage
        trades: list[TradeRow] = []
        buffer = BookResult()
        changes = bookstore.ChangeStream(self.conn, segment_id, self.keys)

        def flush() -> None:
            nonlocal buffer
            changes.close()
            if trades:
                with store.trade_copy(self.conn, segment_id, self.keys) as write:
                    write(trades)
                trades.clear()
            if buffer.rows:
                bookstore.copy_books(self.conn, segment_id, self.keys, buffer)
                buffer = BookResult()

        with changes:  # aborts the COPY on an exception
            frames = 0
            try:
                for end, (result, book_result) in batches:
                    result.rows, ended = cover.feed(result)
                    gaps.extend(ended)
                    trades.extend(result.rows)
                    self._markets.extend(result.markets)
                    pending.add(end, result)
                    books.add(end, book_result)
                    changes.write(book_result)
                    book_result.drop_changes()  # streamed
                    buffer.extend(book_result)
                    self._log_errors(result.errors)
                    self.log_book_errors(book_result.errors)
                    frames += 1
                    if bounded and (
                        pending.trades >= self.batch_trades
                        or books.rows >= self.batch_book_rows
                        or frames >= MAX_FRAMES_PER_TXN
                        or self.stop.is_set()
                    ):
                        flush()
                        return "loading", None
                    if not bounded and self.stop.is_set():
                        raise Stopped()
                    if len(trades) + buffer.rows >= self.batch_book_rows:
                        flush()
            except CorruptSegmentError as exc:
                log.error("segment %s is corrupt: %s", exc.path.name, exc)
                flush()
                return "corrupt", (exc.offset, exc.cause)
            flush()
            return "loaded", None

    def log_book_errors(self, errors: list[ParseError]) -> None:
        self.logged_books = _log_invalid(errors, "book event", self.logged_books)

    def _log_errors(self, errors: list[ParseError]) -> None:
        self._logged = _log_invalid(errors, "trade", self._logged)


def _log_invalid(errors: list[ParseError], what: str, logged: int) -> int:
    """Log ``errors`` while fewer than MAX_LOGGED_ERRORS of this segment were; the count."""
    for err in errors:
        if logged >= MAX_LOGGED_ERRORS:
            break
        logged += 1
        log.warning(
            "invalid %s in %s at byte offset %d: %s; event %s%s",
            what,
            err.segment,
            err.offset,
            err.reason,
            err.event,
            f" (further invalid {what}s in this segment are only counted)"
            if logged == MAX_LOGGED_ERRORS
            else "",
        )
    return logged


def check_books(state: bookstore.BookState, expected: int) -> None:
    if state.books_offset != expected:
        raise ConcurrentLoadError(
            f"the book rows of segment {state.name} changed under this loader (now loaded "
            f"to byte {state.books_offset}, expected {expected}); another loader or a "
            "reparse got there first"
        )


def _merge(total: Pending, part: Pending) -> None:
    total.trades += part.trades
    total.error_count += part.error_count


def _outcome(path: Path, status: str, done: Pending, error: tuple[int, str] | None) -> Outcome:
    offset, cause = error if error else (None, None)
    return Outcome(path.name, status, done.trades, done.error_count, cause, offset)
