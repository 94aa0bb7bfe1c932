"""The book tables on TimescaleDB (the `tsdb_db` fixture, one client at a time): each a
compressed hypertable with a policy; rows load, compress, and reparse identically.
Data stays small: PGlite is slow."""

from __future__ import annotations

from pathlib import Path

import psycopg

from loader.bookschema import BOOK_TABLES
from tests.loader.bookhelpers import build_book_wal, db_book_rows, expected_book_rows
from tests.loader.conftest import run_loader, sealed
from tests.timeouts import TIMEOUT_S


def _ok(dsn: str, *args: str) -> str:
    done = run_loader(dsn, *args, timeout=TIMEOUT_S * 12)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_book_tables_are_compressed_hypertables_and_reparse_identically(
    tsdb_db: str, wal_dir: Path
) -> None:
    _ok(tsdb_db, "init-db", "--timescaledb", "require")
    _ok(tsdb_db, "init-db")  # again: nothing changes, no second policy
    with psycopg.connect(tsdb_db) as conn:
        tables = conn.execute(
            "SELECT hypertable_name, compression_enabled FROM timescaledb_information.hypertables"
            " WHERE hypertable_name = ANY(%s) ORDER BY 1",
            (list(BOOK_TABLES),),
        ).fetchall()
        policies = conn.execute(
            "SELECT count(*) FROM timescaledb_information.jobs"
            " WHERE hypertable_name = ANY(%s) AND proc_name = 'policy_compression'",
            (list(BOOK_TABLES),),
        ).fetchone()
    assert tables == [(t, True) for t in sorted(BOOK_TABLES)]
    assert policies == (len(BOOK_TABLES),)
    build_book_wal(wal_dir, segments=1, frames_per_batch=10, batches=2)
    _ok(tsdb_db, "run", "--wal-dir", str(wal_dir), "--once", "--books")
    want = expected_book_rows(sealed(wal_dir))
    assert db_book_rows(tsdb_db) == want
    with psycopg.connect(tsdb_db) as conn:
        conn.execute("SELECT compress_chunk(c) FROM show_chunks('price_change_rows') c").fetchall()
        conn.commit()
    _ok(tsdb_db, "reparse", "--wal-dir", str(wal_dir), "--all", "--books")
    assert db_book_rows(tsdb_db) == want
