"""The WAL writer: hand records over without waiting, a thread makes them durable.

``append`` encodes a record and queues it; ``append_frame`` queues a received text
frame as it is (a tuple), and the writer thread encodes a whole batch of them at once:
neither touches the disk, and ``append_frame`` does no per-frame encoding, so an asyncio
receive loop can call it for every message. The background thread takes queued records
in batches, compresses each batch into one zstd frame, writes it and fdatasyncs it
before the next, rotates and seals segments. Memory is bounded by ``max_buffer_bytes``,
counted as what the queued Python objects really occupy: past it records are dropped
and counted, and a ``dropped`` record is queued as soon as there is room. Disk errors
are logged and retried with backoff; the data stays in memory meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from sys import getsizeof
from typing import Any

from wal import records as rec
from wal.errors import (
    WalClosedError,
    WalError,
    WalFatalError,
    WalWriteError,
)
from wal.fsutil import REAL_OPS, FileOps, write_durably
from wal.lock import DirectoryLock
from wal.naming import SEQ_NAME, make_name, next_seq
from wal.pending import (
    FRAME_LINE_BYTES,
    OVERHEAD_BYTES,
    Item,
    Pending,
    encode_items,
    item_cost,
    item_size,
    line_item,
)
from wal.policy import DEFAULT_LEVEL, Policy
from wal.recovery import recover_directory
from wal.segment import OpenSegment, compressor
from wal.slowdisk import WRITER_THREAD, from_env
from wal.stats import Hooks, WriterStats
from wal.writer_info import DEFAULT_WRITER

log = logging.getLogger(__name__)

RETRY_INITIAL_S = 0.1  # first retry after a disk error
RETRY_MAX_S = 5.0  # a full disk is retried at least this often
CLOSE_GRACE_S = 0.1  # after a timed-out close: a thread between batches ends by then
DROPPED_RECORD_BYTES = 160  # room a `dropped` record needs in the buffer (line and overhead)
DROP_LOG_EVERY_S = 10.0  # drops are always recorded in the WAL; the log line is rate-limited


class WalWriter:
    """Writes records to segments in ``directory``. Use ``WalWriter.open(...)``."""

    def __init__(
        self,
        directory: Path | str,
        policy: Policy | None = None,
        *,
        writer: str = DEFAULT_WRITER,
        level: int = DEFAULT_LEVEL,
        ops: FileOps = REAL_OPS,
        hooks: Hooks | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = Path(directory)
        self.policy = policy or Policy()
        self._max_buffer_bytes = self.policy.max_buffer_bytes  # the policy is frozen
        self.writer_name = writer
        self.level = level
        self.ops = from_env(ops)
        self.hooks = hooks or Hooks()
        self.clock_ns = clock_ns
        self.monotonic = monotonic
        self.stats = WriterStats()
        # A plain Lock (never taken twice by one thread), entered directly on the hot path:
        # ``with self._cond`` would add a Python-level call per frame.
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._pending = Pending(self.policy.batch_bytes)
        self._first_pending_at: float | None = None
        self._dropped_unrecorded = 0
        self._closing = False
        self._closed = False
        self._retry_at: float | None = None
        self._retry_delay = RETRY_INITIAL_S
        self._segment: OpenSegment | None = None
        self._opened_at = 0.0
        self._lock = DirectoryLock(self.directory)
        self._thread: threading.Thread | None = None
        self._cctx = compressor(level)
        self._last_seal: dict[str, Any] = {}
        self._drop_logged_at = -DROP_LOG_EVERY_S
        self.fatal_error: str | None = None  # set when the writer thread died
        self.unwritten = 0  # records a close() that timed out could not write (lost)

    @classmethod
    def open(cls, directory: Path | str, policy: Policy | None = None, **kwargs: Any) -> WalWriter:
        """Lock the directory, recover what a crash left, open a segment, start writing."""
        writer = cls(directory, policy, **kwargs)
        writer.start()
        return writer

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            self.stats.recovered = recover_directory(
                self.directory,
                ops=self.ops,
                writer=self.writer_name,
                level=self.level,
                clock_ns=self.clock_ns,
            )
            self._open_segment()
        except BaseException:
            self._lock.release()
            raise
        self._thread = threading.Thread(target=self._run, name=WRITER_THREAD, daemon=True)
        self._thread.start()

    # ----- the caller's side (any thread, never blocks on disk) -----

    def append(self, record: rec.Record) -> int:
        """Queue a record. Returns its line number (>= 1), or 0 when it was dropped
        because the buffer is full (the drop is counted and recorded later)."""
        if next(iter(record)) != "type":
            record = {"type": record["type"], **record}
        return self._append_item(line_item(rec.encode_record(record)))

    def append_frame(self, ts_ns: int, conn: int, n: int, message: str | bytes) -> int:
        """``append(records.frame(ts_ns, conn, n, message))``, faster: the message is
        queued as it is and encoded by the writer thread. Same return value."""
        # _append_item and _queue inlined: this runs for every frame received.
        cost = getsizeof(message) + OVERHEAD_BYTES
        stats = self.stats
        with self._mutex:
            if self.fatal_error is not None or self._closing:
                self._refuse()
            if stats.buffered_bytes + cost > self._max_buffer_bytes:
                self._dropped_unrecorded += 1
                stats.dropped_total += 1
                return 0
            if self._dropped_unrecorded:
                self._record_drops()
            pending = self._pending  # Pending.add inlined
            items = pending.items
            if not items:
                self._first_pending_at = self.monotonic()
                self._cond.notify_all()
            items.append((ts_ns, conn, n, message))
            pending.size += len(message) + FRAME_LINE_BYTES
            pending.cost += cost
            if pending.size - pending.cut_size >= pending.batch_bytes:
                pending.cut()
                self._cond.notify_all()
            stats.buffered_bytes += cost
            stats.appended += 1
            return stats.appended

    def _refuse(self) -> None:
        """Under the lock: raise why no record can be taken any more."""
        if self.fatal_error is not None:
            raise WalFatalError(
                f"WAL writer for {self.directory} died: {self.fatal_error}; restart "
                "the process (recovery seals the open segment)"
            )
        raise WalClosedError(f"WAL writer for {self.directory} is closed")

    def _append_item(self, item: Item) -> int:
        cost = item_cost(item)
        with self._cond:
            if self.fatal_error is not None or self._closing:
                self._refuse()
            if self.stats.buffered_bytes + cost > self._max_buffer_bytes:
                self._dropped_unrecorded += 1
                self.stats.dropped_total += 1
                return 0
            if self._dropped_unrecorded:
                self._record_drops()
            self._queue(item, cost)
            return self.stats.appended

    def _record_drops(self) -> None:
        """Under the lock: queue a ``dropped`` record for drops not yet recorded."""
        if not self._dropped_unrecorded:
            return
        record = rec.dropped(self.clock_ns(), self._dropped_unrecorded, "buffer_full")
        item = line_item(rec.encode_record(record))
        self._queue(item, item_cost(item))
        self._dropped_unrecorded = 0
        now = self.monotonic()
        if now - self._drop_logged_at >= DROP_LOG_EVERY_S:
            self._drop_logged_at = now
            log.error(
                "WAL buffer (%d MiB) was full: %d records dropped so far; the disk "
                "is slower than the feed or failing (see earlier errors)",
                self.policy.max_buffer_bytes >> 20,
                self.stats.dropped_total,
            )

    def _queue(self, item: Item, cost: int) -> None:
        if not self._pending.items:
            self._first_pending_at = self.monotonic()
            self._cond.notify_all()
        if self._pending.add(item, item_size(item), cost):
            self._cond.notify_all()
        self.stats.buffered_bytes += cost
        self.stats.appended += 1

    def wait_durable(self, line_no: int, timeout: float | None = None) -> bool:
        """Block until line ``line_no`` is fsynced; False on timeout."""
        with self._cond:
            self._cond.wait_for(
                lambda: self.stats.durable >= line_no or self.fatal_error is not None, timeout
            )
            return self.stats.durable >= line_no

    def flush(self, timeout: float | None = None) -> bool:
        """Ask for everything queued so far to be written now; wait until it is."""
        with self._cond:
            target = self.stats.appended
            self._first_pending_at = 0.0 if self._pending.items else None
            self._cond.notify_all()
        return self.wait_durable(target, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Write what is queued, seal the segment, release the lock. False when that did
        not finish within ``timeout`` (a failing or slow disk): the records not written
        by then (``unwritten``) are lost, and logged. The lock is released only once the
        writer thread has ended; while it still runs, the lock stays held until the
        process exits, so that no other writer can open the directory under it."""
        with self._cond:
            self._closing = True
            self._retry_at = None  # one last attempt now, not after a long backoff
            self._retry_delay = RETRY_INITIAL_S
            self._cond.notify_all()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if self.fatal_error is not None:
                self._lock.release()
                return False
            if thread.is_alive():
                with self._cond:
                    self._closed = True
                    self.unwritten = self.stats.appended - self.stats.durable
                    self._cond.notify_all()
                log.error(
                    "WAL writer could not finish within %.1fs (%s): %d records were not "
                    "written and %d dropped ones not recorded; the open segment is sealed "
                    "by recovery at the next start",
                    timeout or 0,
                    self.stats.last_error or "the disk is slow",
                    self.unwritten,
                    self._dropped_unrecorded,
                )
                thread.join(CLOSE_GRACE_S)
                if thread.is_alive():
                    return False  # keep the lock: the thread may still write
                self._lock.release()
                return False
        self._lock.release()
        return True

    # ----- the writer thread -----

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    lines, seal = self._wait_for_work()
                    if lines is None:
                        return
                self._write(lines, seal)
        except BaseException as exc:  # a bug or MemoryError: never die silently
            log.critical("WAL writer thread died", exc_info=True)
            with self._cond:
                self.fatal_error = f"{type(exc).__name__}: {exc}"
                self.stats.last_error = self.fatal_error
                self._cond.notify_all()

    def _wait_for_work(self) -> tuple[list[tuple[list[Item], int]] | None, bool]:
        """Under the lock: sleep until work is due and take it: (batches with their
        memory cost, seal after them). (None, _) means exit."""
        while True:
            if self._closed:
                return None, False
            now = self.monotonic()
            if self._retry_at is not None and now < self._retry_at:
                self._cond.wait(self._retry_at - now)
                continue
            if self._dropped_unrecorded and (
                self.stats.buffered_bytes + DROPPED_RECORD_BYTES <= self.policy.max_buffer_bytes
            ):
                self._record_drops()  # also when no append comes (quiet feed, shutdown)
            segment = self._segment
            unfinished = segment is not None and segment.seal_written
            if self._closing and segment is None and not self._pending.items:
                return None, False
            rotate = self._closing or (
                segment is not None
                and not segment.seal_written
                and self.policy.rotate_due(now, self._opened_at, segment.size)
            )
            flush = self.policy.flush_due(now, self._first_pending_at, self._pending.size)
            if rotate or flush or unfinished or segment is None:
                self._first_pending_at = None
                return self._pending.take(), rotate
            self._cond.wait(self._next_deadline(now))

    def _rotate_due(self) -> bool:
        segment = self._segment
        assert segment is not None
        return self.policy.rotate_due(self.monotonic(), self._opened_at, segment.size)

    def _next_deadline(self, now: float) -> float:
        deadline = self.policy.rotate_deadline(self._opened_at)
        if self._first_pending_at is not None:
            deadline = min(deadline, self.policy.flush_deadline(self._first_pending_at))
        return max(deadline - now, 0.0)

    def _write(self, chunks: list[tuple[list[Item], int]], seal: bool) -> None:
        """Write the batches, then seal if asked.

        On a disk error, whatever was not made durable goes back to the queue."""
        done = 0
        try:
            if self._segment is not None and self._segment.seal_written:
                self._finish_segment()  # a rename that failed earlier
            if self._segment is None and (chunks or not self._closing):
                self._open_segment()
            for i, chunk in enumerate(chunks):
                if self._segment is None:
                    self._open_segment()
                last = i == len(chunks) - 1
                self._write_batch(*chunk, with_seal=seal and last)
                done += 1
                if not last and self._rotate_due():  # a backlog spans several segments
                    self._write_batch([], 0, with_seal=True)
                    self._finish_segment()
            if seal and self._segment is not None and not self._segment.seal_written:
                self._write_batch([], 0, with_seal=True)
            if seal and self._segment is not None:
                self._finish_segment()
        except (WalError, OSError) as exc:
            self._failed(exc, [item for chunk, _ in chunks[done:] for item in chunk])
            return
        self._retry_delay = RETRY_INITIAL_S
        if self.stats.last_error is not None:
            log.warning("WAL writes succeed again in %s", self.directory)
            self.stats.last_error = None

    def _write_batch(self, chunk: list[Item], cost: int, *, with_seal: bool) -> None:
        segment = self._segment
        assert segment is not None
        data, frames = encode_items(chunk)
        records = len(chunk)
        if with_seal:
            seal = rec.seal(self.clock_ns(), segment.records + records + 1, segment.frames + frames)
            data += rec.encode_record(seal)
            records += 1
        compressed = self._cctx.compress(data)
        started = time.perf_counter()
        segment.append_frame(compressed, records, frames)
        elapsed = time.perf_counter() - started
        if with_seal:
            segment.seal_written = True
            self._last_seal = seal
        self.stats.last_fsync_s = elapsed
        if self.hooks.on_fsync is not None:
            self.hooks.on_fsync(elapsed)
        with self._cond:
            self.stats.durable += len(chunk)
            self.stats.buffered_bytes -= cost
            self.stats.bytes_in += len(data)
            self.stats.bytes_out += len(compressed)
            self.stats.batches += 1
            self._cond.notify_all()

    def _finish_segment(self) -> None:
        segment = self._segment
        assert segment is not None
        sealed = segment.finish()
        self._segment = None
        self.stats.segments_sealed += 1
        self.stats.current_segment = None
        log.info(
            "sealed %s (%d records, %d frames, %d bytes)",
            sealed.name,
            segment.records,
            segment.frames,
            segment.size,
        )
        if self.hooks.on_seal is not None:
            self.hooks.on_seal(sealed, self._last_seal)
        if not self._closing:
            self._open_segment()

    def _open_segment(self) -> None:
        created_ns = self.clock_ns()
        try:
            name = make_name(next_seq(self.directory), created_ns, is_open=True)
        except OSError as exc:
            raise WalWriteError(f"cannot list {self.directory}: {exc}") from exc
        segment = OpenSegment.create(self.directory, name, self.ops)
        header = rec.segment_header(name.seq, created_ns, self.writer_name)
        try:
            segment.append_frame(self._cctx.compress(rec.encode_record(header)), 1, 0)
            self.ops.fsync_dir(self.directory)
        except (WalError, OSError) as exc:
            segment.close()
            (self.directory / name.filename).unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise WalWriteError(f"fsync of directory {self.directory} failed: {exc}") from exc
            raise
        self._segment = segment
        self._opened_at = self.monotonic()
        self.stats.current_segment = name.filename
        try:
            write_durably(self.directory / SEQ_NAME, f"{name.seq + 1}\n".encode(), self.ops)
        except OSError as exc:  # the segment names on disk still give the sequence
            log.warning("could not record the next sequence number in %s: %s", SEQ_NAME, exc)

    def _failed(self, exc: WalError | OSError, unwritten: list[Item]) -> None:
        """Put ``unwritten`` back at the head of the queue and schedule a retry."""
        if isinstance(exc, OSError):
            exc = WalWriteError(f"disk operation in {self.directory} failed: {exc}")
        first = self.stats.last_error is None
        with self._cond:
            self.stats.write_errors += 1
            self.stats.last_error = str(exc)
            self._pending.requeue(unwritten)
            if self._first_pending_at is None and self._pending.items:
                self._first_pending_at = self.monotonic()
            delay = self._retry_delay
            self._retry_at = self.monotonic() + delay
            self._retry_delay = min(delay * 2, RETRY_MAX_S)
        if first:
            log.error(
                "WAL write failed: %s. Keeping %d bytes in memory (limit %d MiB) and "
                "retrying with backoff up to every %.0fs; past the limit records are "
                "dropped and counted.",
                exc,
                self.stats.buffered_bytes,
                self.policy.max_buffer_bytes >> 20,
                RETRY_MAX_S,
            )
        if self.hooks.on_error is not None and isinstance(exc, WalWriteError):
            self.hooks.on_error(exc)
