"""The ``run`` and ``reparse`` loops: which segments to load, over a connection that
survives database outages.

``Runner.run`` loads every sealed segment not yet ``loaded`` or ``corrupt``, in sequence
order, then (unless ``once``) polls the WAL directory for more; the in-memory
:class:`~loader.tracker.Tracker` keeps an idle poll free of database work and of cost
that grows with history. A segment whose file cannot be read is marked ``unreadable``
and retried with a backoff while the others go on loading; a ``once`` run ends by
listing every sealed segment the database marks corrupt or unreadable. Database errors
are handled as :func:`loader.db.classify` says: an outage drops the connection, waits
with backoff (``once``: at most ``max_wait_s``) and resumes from the committed offsets,
so nothing is skipped or marked because the database was away; anything permanent
ends the run. One ``loader run`` per database is enforced with an advisory lock.
"""

from __future__ import annotations

import logging
import os
import threading
import time
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
from loader.tracker import (
    UNREADABLE_RETRY_INITIAL_S,
    DirStamp,
    Tracker,
    unreadable_delay,
)
from wal import WalError, list_sealed, parse_name

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_POLL_S = 1.0  # a new sealed segment is picked up within a second
# After an outage our own old backend may hold the run lock a moment longer (the server
# notices a dead client late); wait this long for it before giving up.
OWN_LOCK_WAIT_S = 30.0


@dataclass
class RunReport:
    """What a run did: segments finished and the ones found corrupt or unreadable."""

    loaded: list[str] = field(default_factory=list)
    corrupt: list[Outcome] = field(default_factory=list)  # found corrupt by this run
    failed: list[Outcome] = field(default_factory=list)  # could not be read by this run
    trades: int = 0
    backfilled: int = 0  # segments loaded earlier whose book rows this run added
    stopped: bool = False
    # A finished ``once`` run: every sealed segment in the WAL directory that is corrupt
    # (or unreadable) in the database, this run's and earlier ones' (status entries).
    still_corrupt: list[dict[str, Any]] = field(default_factory=list)
    still_unreadable: list[dict[str, Any]] = field(default_factory=list)


def own_lock_wait(holder_pid: int | None, previous_pid: int | None, waited_s: float) -> bool:
    """Whether to wait for the run lock rather than give up: only while its holder is
    this loader's own previous backend, and not longer than OWN_LOCK_WAIT_S."""
    return previous_pid is not None and holder_pid == previous_pid and waited_s < OWN_LOCK_WAIT_S


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
        max_wait_s: float | None = None,
        unreadable_retry_s: float = UNREADABLE_RETRY_INITIAL_S,
        clock: Callable[[], float] = time.monotonic,
        books: bool = False,
    ) -> None:
        self.books = books  # also load the book tables, backfilling loaded segments
        self._books_backfilled = False
        self.dsn = dsn
        self.wal_dir = wal_dir
        self.stop = stop
        self.parser = parser
        self.batch_trades = batch_trades
        self.max_wait_s = max_wait_s
        self.unreadable_retry_s = unreadable_retry_s
        self.clock = clock
        self.tracker = Tracker()
        self._conn: psycopg.Connection | None = None
        self._lock_pid: int | None = None  # our backend that last held the run lock
        self._lock_wait_since: float | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def run(self, *, once: bool, poll_s: float = DEFAULT_POLL_S) -> RunReport:
        """Load until caught up (``once``) or until stopped. Returns what was done."""
        report = RunReport()
        try:
            while not self.stop.is_set():
                self._retrying(partial(self._poll, report, once=once), "loading segments")
                if once:
                    report.still_corrupt, report.still_unreadable = self._retrying(
                        self._problems_in_wal_dir, "listing corrupt segments"
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
        work otherwise). A segment whose file is missing or cannot be read fails alone
        (``report.failed``); the others are reparsed.
        """
        names = [sealed_segment_name(name) for name in names]
        report = RunReport()
        try:
            for name in names:
                try:
                    outcome = self._retrying(partial(self._reload, name), f"reparsing {name}")
                except (OSError, WalError, UnknownSegmentError) as exc:
                    outcome = Outcome(name, "unreadable", error=_read_error(exc))
                    log.error("cannot reparse segment %s: %s", name, outcome.error)
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

    def _problems_in_wal_dir(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        conn = self._connection(lock=True)
        on_disk = set(status.sealed_names(self.wal_dir))
        corrupt = status.corrupt_segments(conn, self.wal_dir, on_disk)
        unreadable = status.unreadable_segments(conn, self.wal_dir, on_disk)
        return (
            [c for c in corrupt if c["in_wal_dir"]],
            [u for u in unreadable if u["in_wal_dir"]],
        )

    def _poll(self, report: RunReport, *, once: bool) -> None:
        """One pass: take in what is new in the WAL directory, load what is due."""
        conn = self._connection(lock=True)
        stamp = _dir_stamp(self.wal_dir)
        if once or self.tracker.should_list(stamp, time.time_ns()):
            names = status.sealed_names(self.wal_dir, known=self.tracker)
            new = self.tracker.new_names(names)
            states = store.states_for(conn, new) if new else {}
            conn.commit()
            statuses = {name: states[name].status if name in states else None for name in new}
            self.tracker.listed(names, stamp, statuses, self.clock())
        loader = self._loader(conn)
        for name in self.tracker.due(self.clock(), ignore_backoff=once):
            if self.stop.is_set():
                return
            self._load_one(conn, loader, name, report)
        if self.books and not self._books_backfilled and not self.stop.is_set():
            # Once per run: from here on every segment loads its book rows with its trades.
            report.backfilled += backfill_books(conn, loader, self.wal_dir)
            self._books_backfilled = True

    def _load_one(
        self, conn: psycopg.Connection, loader: SegmentLoader, name: str, report: RunReport
    ) -> None:
        state = store.ensure_segment(conn, name, self.parser.version)
        if state.status == "unreadable":
            state = store.resume_unreadable(conn, state)
        if state.status != "loading":
            self.tracker.finished(name, state.status)  # a reparse got there first
            return
        try:
            outcome = loader.load(self.wal_dir / name, state)
        except ConcurrentLoadError as exc:
            log.warning("%s; skipping it in this pass", exc)
            return
        except (OSError, WalError) as exc:
            self._mark_unreadable(conn, state, exc, report)
            return
        _account(report, outcome)
        if outcome.status == "stopped":
            return
        self.tracker.finished(name, outcome.status)
        if state.tries:
            store.clear_unreadable(conn, state.id)
        log.info(
            "segment %s %s: %d trades, %d invalid trades",
            outcome.name,
            outcome.status,
            outcome.trades,
            outcome.parse_errors,
        )

    def _mark_unreadable(
        self, conn: psycopg.Connection, state: store.SegmentState, exc: Exception, report: RunReport
    ) -> None:
        error = _read_error(exc)
        delay = unreadable_delay(state.tries + 1, self.unreadable_retry_s)
        store.mark_unreadable(conn, state, error, delay)
        self.tracker.unreadable(state.name, self.clock() + delay)
        report.failed.append(Outcome(state.name, "unreadable", error=error))
        log.error(
            "segment %s cannot be read (%s); other segments go on loading, this one is "
            "tried again in %.0f s from its committed byte offset %d",
            state.name,
            error,
            delay,
            state.offset_bytes,
        )

    def _reload(self, name: str) -> Outcome:
        path = self.wal_dir / sealed_segment_name(name)
        if not path.exists():
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
            self._conn = db.connect(self.dsn, timeout_s=self.max_wait_s)
            db.require_schema(self._conn)
            if lock:
                self._take_lock(self._conn)
        return self._conn

    def _take_lock(self, conn: psycopg.Connection) -> None:
        try:
            db.take_run_lock(conn)
        except LoaderBusyError as exc:
            if self._lock_pid is None:
                raise  # another loader was there first
            now = self.clock()
            if self._lock_wait_since is None:
                self._lock_wait_since = now
            since = self._lock_wait_since
            if own_lock_wait(exc.holder_pid, self._lock_pid, now - since):
                raise db.Transient(
                    f"this loader's previous session (backend pid {self._lock_pid}) still "
                    "holds the run lock"
                ) from None
            who = (
                f"this loader's previous session (backend pid {self._lock_pid}) for "
                f"{OWN_LOCK_WAIT_S:g} s after it was lost"
                if exc.holder_pid == self._lock_pid
                else f"backend pid {exc.holder_pid}"
            )
            raise LoaderBusyError(
                "this loader lost its database session, and another loader now holds the "
                f"database (the run lock is held by {who}); exiting: only one `loader run` "
                "may load into a database",
                holder_pid=exc.holder_pid,
            ) from None
        self._lock_pid = conn.info.backend_pid
        self._lock_wait_since = None

    def _retrying(self, work: Callable[[], T], what: str) -> T:
        return db.retrying(
            work,
            dsn=self.dsn,
            stop=self.stop,
            what=what,
            max_wait_s=self.max_wait_s,
            on_error=self._after_error,
            clock=self.clock,
        )

    def _after_error(self, exc: BaseException) -> None:
        """Drop a connection an error left unusable; roll back one it left usable."""
        conn = self._conn
        if conn is None or conn.closed:
            return
        if db.classify(exc) is db.Kind.OUTAGE or conn.broken:
            self.close()  # reconnect next time: the old connection is unusable
            return
        try:
            conn.rollback()
        except psycopg.Error:
            self.close()


def _dir_stamp(directory: Path) -> DirStamp | None:
    try:
        st = os.stat(directory)
    except OSError:
        return None  # list it, and let the listing raise what is wrong
    return st.st_ino, st.st_mtime_ns


def _read_error(exc: BaseException) -> str:
    """Why a segment could not be read, in one line."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror} ({type(exc).__name__}, errno {exc.errno}){where}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _account(report: RunReport, outcome: Outcome) -> None:
    report.trades += outcome.trades
    if outcome.status == "loaded":
        report.loaded.append(outcome.name)
    elif outcome.status == "corrupt":
        report.corrupt.append(outcome)
    elif outcome.status == "unreadable":
        report.failed.append(outcome)
    else:
        report.stopped = True
