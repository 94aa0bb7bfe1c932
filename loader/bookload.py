"""``--books`` switched on later: load the book rows of segments already loaded.

Each such segment (``loaded`` or ``corrupt``, ``books_offset`` short of
``offset_bytes``) is read again from its ``books_offset`` by
:meth:`loader.load.SegmentLoader.backfill`, in transactions that each move
``books_offset``, so a kill anywhere resumes where the last commit left off.
"""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg

from loader import bookstore
from loader.load import SegmentLoader

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
        if loader.backfill(path, state.id):
            done += 1
            log.info("segment %s: book rows backfilled", state.name)
    return done
