"""The ``run`` and ``reparse`` loops: which segments to load, over a connection that
survives database outages.

``Runner.run`` loads every sealed segment not yet ``loaded`` or ``corrupt``, in sequence
order, then (unless ``once``) polls the WAL directory for more; a ``once`` run ends by
listing every sealed segment the database marks corrupt. A database outage at any
point drops the connection, waits with backoff and resumes from the committed offsets:
nothing is skipped or marked because the database was away. One ``loader run`` per
database is enforced with an advisory lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from loader import db, hypertables, status, store
from loader.bookload import backfill_books
from loader.errors import (
    ConcurrentLoadError,
    LoaderBusyError,
    SegmentNameError,
    UnknownSegmentError,
)
from loader.load import CURRENT_PARSER, DEFAULT_BATCH_TRADES, Outcome, Parser, SegmentLoader
from wal import list_sealed, parse_name

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_POLL_S = 1.0  # a new sealed segment is picked up within a second


@dataclass
class RunReport:
    """What a run did: segments finished and the ones found corrupt."""

    loaded: list[str] = field(default_factory=list)
    corrupt: list[Outcome] = field(default_factory=list)  # found corrupt by this run
    trades: int = 0
    stopped: bool = False
    # A finished ``once`` run: every sealed segment in the WAL directory that is corrupt in
    # the database, this run's and earlier ones' (status.corrupt_segments entries).
    still_corrupt: list[dict[str, Any]] = field(default_factory=list)


def sealed_segment_name(arg: str) -> str:
    """The file name in ``arg`` (a name or a path) if it names a sealed segment.

    Raises SegmentNameError for ``.open`` segments (a reparse would load a segment that
    ``run`` loads again once it is sealed) and for names that are no segment at all.
    """
    name = Path(arg).name
    parsed = parse_name(name)
    if parsed is None:
        raise SegmentNameError(
            f"{name or arg!r} is not a segment name (segments are named like "
            "000000000017-20261124T101500Z.jsonl.zst)"
        )
    if parsed.is_open:
        raise SegmentNameError(
            f"only sealed segments can be reparsed; {name} is still being written "
            f"(`loader run` loads it as {parsed.sealed_name} once it is sealed)"
        )
    return name


class Runner:
    """Owns the connection of a ``run`` or ``reparse`` and its retry policy."""

    def __init__(
        self,
        dsn: str | None,
        wal_dir: Path,
        *,
        stop: threading.Event,
        parser: Parser = CURRENT_PARSER,
        batch_trades: int = DEFAULT_BATCH_TRADES,
        books: bool = False,
    ) -> None:
        self.books = books  # also load the book tables, backfilling loaded segments
        self.dsn = dsn
        self.wal_dir = wal_dir
        self.stop = stop
        self.parser = parser
        self.batch_trades = batch_trades
        self._conn: psycopg.Connection | None = None
        self._holds_run_lock = False

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def run(self, *, once: bool, poll_s: float = DEFAULT_POLL_S) -> RunReport:
        """Load until caught up (``once``) or until stopped. Returns what was done."""
        report = RunReport()
        try:
            while not self.stop.is_set():
                self._retrying(lambda: self._load_pending(report), "loading segments")
                if once:
                    report.still_corrupt = self._retrying(
                        self._corrupt_in_wal_dir, "listing corrupt segments"
                    )
                    break
                self.stop.wait(poll_s)
        except db.Stopped:
            pass
        report.stopped = self.stop.is_set()
        return report

    def reparse(self, names: Iterable[str], progress: Callable[[Outcome], None]) -> RunReport:
        """Reload each named segment in its own transaction.

        Every name must be a sealed segment's (SegmentNameError, before any database
        work otherwise).
        """
        names = [sealed_segment_name(name) for name in names]
        report = RunReport()
        try:
            for name in names:
                outcome = self._retrying(partial(self._reload, name), f"reparsing {name}")
                _account(report, outcome)
                progress(outcome)
        except db.Stopped:
            report.stopped = True
        return report

    def recompress(self) -> int:
        """After a reparse: recompress the TimescaleDB chunks it left partly uncompressed."""

        def work() -> int:
            return hypertables.recompress_partial(self._connection(lock=False))

        return self._retrying(work, "recompressing chunks")

    def stale_names(self, *, all_segments: bool) -> list[str]:
        """Names of segments to reparse: all known ones, or those an older parser loaded."""

        def query() -> list[str]:
            conn = self._connection(lock=False)
            states = store.all_states(conn)
            conn.commit()
            on_disk = {path.name for path in list_sealed(self.wal_dir)}
            wanted = sorted(
                name
                for name, state in states.items()
                if all_segments or state.parser_version < self.parser.version
            )
            missing = [name for name in wanted if name not in on_disk]
            if missing:
                log.warning(
                    "%d segment(s) to reparse are no longer in %s and are left as they are "
                    "(first: %s)",
                    len(missing),
                    self.wal_dir,
                    missing[0],
                )
            return [name for name in wanted if name in on_disk]

        return self._retrying(query, "listing segments")

    def _corrupt_in_wal_dir(self) -> list[dict[str, Any]]:
        conn = self._connection(lock=True)
        return [c for c in status.corrupt_segments(conn, self.wal_dir) if c["in_wal_dir"]]

    def _load_pending(self, report: RunReport) -> None:
        conn = self._connection(lock=True)
        states = store.all_states(conn)
        conn.commit()
        loader = self._loader(conn)
        for path in list_sealed(self.wal_dir):
            state = states.get(path.name)
            if self.stop.is_set() or (state is not None and state.status != "loading"):
                continue
            if state is None:
                state = store.ensure_segment(conn, path.name, self.parser.version)
                if state.status != "loading":
                    continue  # a reparse got to this new segment first
            try:
                outcome = loader.load(path, state)
            except ConcurrentLoadError as exc:
                log.warning("%s; skipping it in this pass", exc)
                continue
            _account(report, outcome)
            if outcome.status != "stopped":
                log.info(
                    "segment %s %s: %d trades, %d invalid",
                    outcome.name,
                    outcome.status,
                    outcome.trades,
                    outcome.parse_errors,
                )
        if self.books and not self.stop.is_set():
            backfill_books(conn, loader, self.wal_dir)

    def _reload(self, name: str) -> Outcome:
        path = self.wal_dir / sealed_segment_name(name)
        if not path.is_file():
            raise UnknownSegmentError(
                f"segment {name} is not in {self.wal_dir}: `loader status` lists the "
                "segments, and a reparse needs the segment file"
            )
        conn = self._connection(lock=False)
        state = store.ensure_segment(conn, name, self.parser.version)
        return self._loader(conn).reload(path, state)

    def _loader(self, conn: psycopg.Connection) -> SegmentLoader:
        return SegmentLoader(
            conn,
            stop=self.stop,
            parser=self.parser,
            batch_trades=self.batch_trades,
            books=self.books,
        )

    def _connection(self, *, lock: bool) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = db.connect(self.dsn)
            db.require_schema(self._conn)
            if lock:
                self._take_lock(self._conn)
        return self._conn

    def _take_lock(self, conn: psycopg.Connection) -> None:
        try:
            db.take_run_lock(conn)
        except LoaderBusyError:
            if not self._holds_run_lock:
                raise
            # Our own session from before the outage may not be gone yet: wait for it.
            raise psycopg.OperationalError("previous session still holds the run lock") from None
        self._holds_run_lock = True

    def _retrying(self, work: Callable[[], T], what: str) -> T:
        def attempt() -> T:
            try:
                return work()
            except psycopg.OperationalError:
                self.close()  # reconnect next time: the old connection is unusable
                raise

        return db.retrying(attempt, dsn=self.dsn, stop=self.stop, what=what)


def _account(report: RunReport, outcome: Outcome) -> None:
    report.trades += outcome.trades
    if outcome.status == "loaded":
        report.loaded.append(outcome.name)
    elif outcome.status == "corrupt":
        report.corrupt.append(outcome)
    else:
        report.stopped = True
