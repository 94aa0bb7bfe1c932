"""Loading one segment: read its zstd frames, parse them, COPY the trades, move the offset.

``SegmentLoader.load`` continues a segment from its committed offset in transactions of
about ``batch_trades`` trades; each commits the trades and the new offset together, so a
crash anywhere resumes exactly where the last commit left off. ``reload`` (reparse)
deletes a segment's rows and loads it again from byte 0 in a single transaction.
A corrupt segment keeps every trade of the frames before the damage and is marked
``corrupt`` with the offset and cause.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

from loader import store
from loader.db import Stopped
from loader.parse import PARSER_VERSION, BatchResult, ParseError, scan_batch
from loader.store import Pending, SegmentState
from wal import CorruptSegmentError, SegmentReader

log = logging.getLogger(__name__)

DEFAULT_BATCH_TRADES = 20_000  # trades per transaction; see bench/loader.py
# Commit at least every this many zstd frames, so a segment with few trades still
# advances its committed offset (and a crash re-reads little).
MAX_FRAMES_PER_TXN = 2_000
MAX_LOGGED_ERRORS = 5  # invalid trades logged per segment; the rest are only counted


@dataclass(frozen=True)
class Parser:
    """The parser a load uses: its version and its batch scanner."""

    version: int = PARSER_VERSION
    scan: Callable[..., BatchResult] = scan_batch


CURRENT_PARSER = Parser()


@dataclass(frozen=True)
class Outcome:
    """How loading one segment ended: ``loaded``, ``corrupt`` or ``stopped``."""

    name: str
    status: str
    trades: int = 0
    parse_errors: int = 0
    error: str | None = None


def read_batches(path: Path, start: int, parser: Parser) -> Iterator[tuple[int, BatchResult]]:
    """``(end_offset, parsed batch)`` for each zstd frame from ``start``.

    Raises CorruptSegmentError at the first damaged frame, or at a line that is no record.
    """
    for batch in SegmentReader(path, tolerate_torn_tail=False).batches(start):
        try:
            result = parser.scan(batch.lines, segment=path.name, offset=batch.offset)
        except (UnicodeDecodeError, ValueError) as exc:
            raise CorruptSegmentError(
                path, batch.offset, f"a line is not a record: {exc}"
            ) from None
        yield batch.end, result


class SegmentLoader:
    """Loads segments over one connection. ``stop`` ends work at the next safe point."""

    def __init__(
        self,
        conn: psycopg.Connection,
        *,
        stop: threading.Event,
        parser: Parser = CURRENT_PARSER,
        batch_trades: int = DEFAULT_BATCH_TRADES,
    ) -> None:
        self.conn = conn
        self.stop = stop
        self.parser = parser
        self.batch_trades = batch_trades
        self._logged = 0

    def load(self, path: Path, state: SegmentState) -> Outcome:
        """Continue ``path`` from its committed offset to its end (or a stop)."""
        self._logged = 0
        committed = state.offset_bytes
        pending, trades, errors, frames = Pending(end=committed), 0, 0, 0
        try:
            for end, result in read_batches(path, committed, self.parser):
                pending.add(end, result)
                frames += 1
                self._log_errors(result.errors)
                if self.stop.is_set() or self._full(pending, frames):
                    self._commit(state, committed, pending, "loading")
                    committed, trades = pending.end, trades + len(pending.rows)
                    errors += pending.error_count
                    pending, frames = Pending(end=committed), 0
                    if self.stop.is_set():
                        return Outcome(path.name, "stopped", trades, errors)
        except CorruptSegmentError as exc:
            self._commit(state, committed, pending, "corrupt", (exc.offset, exc.cause))
            log.error("segment %s is corrupt: %s", path.name, exc)
            return self._outcome(path, "corrupt", trades, errors, pending, str(exc))
        self._commit(state, committed, pending, "loaded")
        return self._outcome(path, "loaded", trades, errors, pending)

    def reload(self, path: Path, state: SegmentState) -> Outcome:
        """Delete the segment's trades and load it again from byte 0, in one transaction."""
        self._logged = 0
        with self.conn.transaction():
            current = store.lock_segment(self.conn, state.id)
            store.reset_segment(self.conn, current, self.parser.version)
            pending, trades, errors = Pending(end=0), 0, 0
            status, error = "loaded", None
            try:
                for end, result in self._unless_stopped(read_batches(path, 0, self.parser)):
                    pending.add(end, result)
                    self._log_errors(result.errors)
                    if len(pending.rows) >= self.batch_trades:
                        self._write(state.id, pending, "loading")
                        trades, errors = trades + len(pending.rows), errors + pending.error_count
                        pending = Pending(end=end)
            except CorruptSegmentError as exc:
                status, error = "corrupt", (exc.offset, exc.cause)
                log.error("segment %s is corrupt: %s", path.name, exc)
            self._write(state.id, pending, status, error)
        return self._outcome(path, status, trades, errors, pending, error and error[1])

    def _unless_stopped(
        self, items: Iterable[tuple[int, BatchResult]]
    ) -> Iterator[tuple[int, BatchResult]]:
        for item in items:
            if self.stop.is_set():
                raise Stopped()  # inside the transaction: rolls the reparse back
            yield item

    def _full(self, pending: Pending, frames: int) -> bool:
        return len(pending.rows) >= self.batch_trades or frames >= MAX_FRAMES_PER_TXN

    def _commit(
        self,
        state: SegmentState,
        committed: int,
        pending: Pending,
        status: str,
        error: tuple[int, str] | None = None,
    ) -> None:
        with self.conn.transaction():
            store.check_unchanged(store.lock_segment(self.conn, state.id), committed)
            self._write(state.id, pending, status, error)

    def _write(
        self,
        segment_id: int,
        pending: Pending,
        status: str,
        error: tuple[int, str] | None = None,
    ) -> None:
        store.copy_trades(self.conn, segment_id, pending.rows)
        store.record_progress(
            self.conn,
            segment_id,
            pending,
            status=status,
            parser_version=self.parser.version,
            error=error,
        )

    def _log_errors(self, errors: list[ParseError]) -> None:
        for err in errors:
            if self._logged >= MAX_LOGGED_ERRORS:
                return
            self._logged += 1
            log.warning(
                "invalid trade in %s at byte offset %d: %s; event %s%s",
                err.segment,
                err.offset,
                err.reason,
                err.event,
                " (further invalid trades in this segment are only counted)"
                if self._logged == MAX_LOGGED_ERRORS
                else "",
            )

    @staticmethod
    def _outcome(
        path: Path,
        status: str,
        trades: int,
        errors: int,
        pending: Pending,
        error: str | None = None,
    ) -> Outcome:
        return Outcome(
            path.name, status, trades + len(pending.rows), errors + pending.error_count, error
        )
