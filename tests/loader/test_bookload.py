"""Loading the book tables (--books) in process: same transaction as the trades, backfill
when switched on later, reparse, invalid events counted."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from loader.runner import Runner
from tests.loader.bookhelpers import (
    TABLES,
    build_book_wal,
    db_book_rows,
    expected_book_rows,
)
from tests.loader.conftest import db_trades, expected_trades, run_loader, sealed, segments
from tests.loader.helpers import trade_frame, write_segment


def run_once(dsn: str, wal_dir: Path, **kwargs: Any) -> Any:
    runner = Runner(dsn, wal_dir, stop=threading.Event(), **kwargs)
    try:
        return runner.run(once=True)
    finally:
        runner.close()


def reparse_all(dsn: str, wal_dir: Path, **kwargs: Any) -> Any:
    runner = Runner(dsn, wal_dir, stop=threading.Event(), **kwargs)
    try:
        return runner.reparse(runner.stale_names(all_segments=True), lambda _o: None)
    finally:
        runner.close()


def check_book_counts_match_tables(dsn: str) -> None:
    """Each segment's committed book row count equals its rows in the tables."""
    union = " UNION ALL ".join(f"SELECT segment_id FROM {table}" for table in TABLES)
    with psycopg.connect(dsn) as conn:
        mismatched = conn.execute(
            f"SELECT s.name, s.book_rows, count(b.segment_id) FROM wal_segments s"
            f" LEFT JOIN ({union}) b ON b.segment_id = s.id GROUP BY s.id"
            " HAVING s.book_rows <> count(b.segment_id)"
        ).fetchall()
    assert mismatched == []


def test_run_with_books_loads_every_book_row_field_by_field(db: str, wal_dir: Path) -> None:
    bad = build_book_wal(wal_dir, segments=2, frames_per_batch=30)
    report = run_once(db, wal_dir, books=True, batch_trades=2)
    assert len(report.loaded) == 2
    want = expected_book_rows(sealed(wal_dir))
    assert all(want[table] for table in TABLES)
    assert db_book_rows(db) == want
    assert db_trades(db) == expected_trades(sealed(wal_dir))
    check_book_counts_match_tables(db)
    segs = segments(db).values()
    assert sum(s["book_errors"] for s in segs) == bad
    assert all(s["books_offset"] == s["offset_bytes"] for s in segs)


def test_small_transactions_commit_book_rows_with_the_offset(db: str, wal_dir: Path) -> None:
    build_book_wal(wal_dir, segments=1, frames_per_batch=40, batches=5)
    runner = Runner(db, wal_dir, stop=threading.Event(), books=True)
    runner.batch_trades = 1  # one zstd frame per transaction
    try:
        runner.run(once=True)
    finally:
        runner.close()
    assert db_book_rows(db) == expected_book_rows(sealed(wal_dir))
    check_book_counts_match_tables(db)


def test_books_switched_on_later_backfills_loaded_segments_exactly_once(
    db: str, wal_dir: Path
) -> None:
    build_book_wal(wal_dir, segments=2, frames_per_batch=20)
    run_once(db, wal_dir)
    assert sum(sum(rows.values()) for rows in db_book_rows(db).values()) == 0
    assert all(s["books_offset"] == 0 for s in segments(db).values())
    first = run_once(db, wal_dir, books=True)
    again = run_once(db, wal_dir, books=True)  # nothing left to backfill: nothing doubles
    assert (len(first.loaded), first.backfilled, again.backfilled) == (0, 2, 0)
    assert db_book_rows(db) == expected_book_rows(sealed(wal_dir))
    assert db_trades(db) == expected_trades(sealed(wal_dir))
    check_book_counts_match_tables(db)


def test_books_switched_off_keeps_rows_and_adds_none(db: str, wal_dir: Path) -> None:
    build_book_wal(wal_dir, segments=1, frames_per_batch=20)
    run_once(db, wal_dir, books=True)
    before = db_book_rows(db)
    write_segment(wal_dir, 5, [[trade_frame(9)]])
    run_once(db, wal_dir)
    assert db_book_rows(db) == before
    assert sum(db_trades(db).values()) == sum(expected_trades(sealed(wal_dir)).values())


def test_reparse_with_books_leaves_identical_rows_in_every_table(db: str, wal_dir: Path) -> None:
    build_book_wal(wal_dir, segments=2, frames_per_batch=20)
    run_once(db, wal_dir, books=True)
    books, trades, segs = db_book_rows(db), db_trades(db), segments(db)
    report = reparse_all(db, wal_dir, books=True)
    assert len(report.loaded) == 2
    assert db_book_rows(db) == books and db_trades(db) == trades
    again = segments(db)
    keep = ("book_rows", "book_errors", "books_offset", "offset_bytes", "trades", "status")
    assert {n: [s[k] for k in keep] for n, s in again.items()} == {
        n: [s[k] for k in keep] for n, s in segs.items()
    }
    check_book_counts_match_tables(db)


def test_reparse_cli_takes_books_from_the_environment(db: str, wal_dir: Path) -> None:
    build_book_wal(wal_dir, segments=1, frames_per_batch=10)
    done = run_loader(db, "run", "--wal-dir", str(wal_dir), "--once", env={"LOADER_BOOKS": "1"})
    assert done.returncode == 0, done.stderr
    assert "invalid book event in" in done.stderr
    rows = db_book_rows(db)
    again = run_loader(db, "reparse", "--wal-dir", str(wal_dir), "--all", "--books")
    assert again.returncode == 0, again.stderr
    assert db_book_rows(db) == rows == expected_book_rows(sealed(wal_dir))


def test_invalid_book_events_are_logged_once_each_up_to_a_limit(
    db: str, wal_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    build_book_wal(wal_dir, segments=1, frames_per_batch=2, batches=8)
    with caplog.at_level(logging.WARNING, logger="loader.load"):
        run_once(db, wal_dir, books=True)
    logged = [r for r in caplog.records if "invalid book event" in r.getMessage()]
    assert len(logged) == 5 and "only counted" in logged[-1].getMessage()
    assert next(iter(segments(db).values()))["book_errors"] == 8


def test_status_shows_book_rows_and_the_segments_still_to_backfill(db: str, wal_dir: Path) -> None:
    build_book_wal(wal_dir, segments=1, frames_per_batch=20)
    run_once(db, wal_dir, books=True)
    write_segment(wal_dir, 5, [[trade_frame(9)]])
    run_once(db, wal_dir)  # --books off: this segment's book rows are still to load
    done = run_loader(db, "status", "--wal-dir", str(wal_dir))
    assert done.returncode == 0, done.stderr
    rows = sum(sum(r.values()) for r in expected_book_rows(sealed(wal_dir)).values())
    assert f"books            {rows} rows" in done.stdout
    assert "1 segments behind (`loader run --books` backfills them)" in done.stdout
