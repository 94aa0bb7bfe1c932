"""Exactly-once under SIGKILL with --books: a child ``loader run`` killed at random
points, with --books on in most rounds and off in some (so kills land in backfills too),
then a final run. Every table must equal what the WAL's events say."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import psycopg

from tests.loader.bookhelpers import build_book_wal, db_book_rows, expected_book_rows
from tests.loader.conftest import (
    ROOT,
    db_trades,
    expected_trades,
    loader_cmd,
    run_loader,
    sealed,
)
from tests.loader.test_bookload import check_book_counts_match_tables
from tests.timeouts import TIMEOUT_S

ROUNDS = 14


def committed(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(book_rows + trades), 0) FROM wal_segments"
        ).fetchone()
    return int(row[0]) if row else 0


def test_sigkill_with_books_loses_and_doubles_no_book_row(db: str, wal_dir: Path) -> None:
    build_book_wal(wal_dir, segments=5, frames_per_batch=6, batches=30)
    want = expected_book_rows(sealed(wal_dir))
    total = sum(sum(rows.values()) for rows in want.values())
    everything = total + sum(expected_trades(sealed(wal_dir)).values())
    rng = random.Random(11)
    mid_load = 0
    for _ in range(ROUNDS):
        before = committed(db)
        if before >= everything:
            break
        books = ["--books"] if rng.random() < 0.7 else []
        child = subprocess.Popen(
            loader_cmd(
                "--dsn", db, "run", "--wal-dir", str(wal_dir), "--batch-trades", "1", *books
            ),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + TIMEOUT_S
        while committed(db) <= before and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.05))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=TIMEOUT_S)
        check_book_counts_match_tables(db)
        loaded = sum(sum(rows.values()) for rows in db_book_rows(db).values())
        mid_load += 0 < loaded < total
    assert mid_load >= ROUNDS // 2, "the kills should land while book rows load"
    final = run_loader(db, "run", "--wal-dir", str(wal_dir), "--once", "--books")
    assert final.returncode == 0, final.stderr
    assert db_book_rows(db) == want
    assert db_trades(db) == expected_trades(sealed(wal_dir))
    check_book_counts_match_tables(db)
