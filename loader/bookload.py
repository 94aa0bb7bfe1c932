"""``--books`` switched on later: load the book rows of segments already loaded.

Each such segment (``loaded`` or ``corrupt``, ``books_offset`` short of
``offset_bytes``) is read again from its ``books_offset`` by
:func:`backfill`, in transactions that each move
``books_offset``, so a kill anywhere resumes where the last commit left off.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from loader import bookstore, load
from loader.books import BookResult
from loader.bookstore import BookPending
from loader.prefetch import Prefetch
from wal import CorruptSegmentError

if TYPE_CHECKING:
    from loader.load import Both, SegmentLoader

log = logging.getLogger(__name__)


def backfill_books(conn: psycopg.Connection, loader: SegmentLoader, wal_dir: Path) -> int:
    """Backfill every segment in ``wal_dir`` that needs it; returns how many were done."""
    behind = bookstore.behind(conn)
    conn.commit()
    done = 0
    for state in behind:
        path = wal_dir / state.name
        if loader.stop.is_set():
            break
        if not path.is_file():
            continue  # pruned: its book rows can only come from a backup, via reparse
        if backfill(loader, path, state.id):
            done += 1
            log.info("segment %s: book rows backfilled", state.name)
    return done


def backfill(loader: SegmentLoader, path: Path, segment_id: int) -> bool:
    """Load the book rows of frames whose trades are loaded but whose book rows are
    not (--books switched on later), in transactions that move ``books_offset``.
    Returns False when stopped before catching up."""
    loader.logged_books = 0
    with loader.transaction():
        state = bookstore.lock_books(loader.conn, segment_id)
    if state.books_offset >= state.offset_bytes:
        return True
    log.info(
        "segment %s: loading book rows from byte %d to %d (backfill)",
        path.name,
        state.books_offset,
        state.offset_bytes,
    )
    committed = state.books_offset
    with Prefetch(load.read_book_batches(path, committed, loader.parser, segment_id)) as ahead:
        batches = iter(ahead)
        while True:
            books = BookPending(end=committed)
            with loader.transaction():
                state = bookstore.lock_books(loader.conn, segment_id)
                load.check_books(state, committed)
                done = _fill_books(loader, batches, segment_id, books, state.offset_bytes)
                bookstore.record_books(loader.conn, segment_id, books)
            committed = books.end
            if done:
                return True
            if loader.stop.is_set():
                return False


def _fill_books(
    loader: SegmentLoader,
    batches: Iterator[tuple[int, Both]],
    segment_id: int,
    books: BookPending,
    limit: int,
) -> bool:
    """Book rows only, up to byte ``limit``; True when it is reached."""
    if books.end >= limit:
        return True
    buffer, frames = BookResult(), 0
    try:
        for end, (_trades, result) in batches:
            buffer.extend(result)
            books.add(end, result)
            loader.log_book_errors(result.errors)
            frames += 1
            if end >= limit:
                break
            if (
                buffer.rows >= loader.batch_book_rows
                or frames >= load.MAX_FRAMES_PER_TXN
                or loader.stop.is_set()
            ):
                bookstore.copy_books(loader.conn, segment_id, loader.keys, buffer)
                return False
    except CorruptSegmentError as exc:  # changed since its trades were loaded
        log.error("segment %s is corrupt before its loaded offset: %s", exc.path.name, exc)
    bookstore.copy_books(loader.conn, segment_id, loader.keys, buffer)
    return True
