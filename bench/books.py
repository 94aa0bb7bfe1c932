"""Book data loading (``loader run --books``), called from bench/loader.py.

Measured in one run on one throwaway PostgreSQL: price-change rows/s of ``--books`` on a
book-heavy mix (the fake exchange's stream with 1% trades) against a bare binary COPY of
the same price-change rows, parsed and encoded beforehand, into a table LIKE
price_change_rows (its indexes included: what the server alone can do for the loader,
the goal's baseline), and the same COPY into an UNLOGGED table without indexes (what the
index costs); ROUNDS rounds alternated, best of each; a trades-only load with the book code
present and ``--books`` off against the same load with the only code it added to the
trades path (the market metadata scan) stubbed out; bytes per stored price-change row.
Then on the TimescaleDB test server (PGlite, scripts/tsdbserver.py): the same mix loaded
with ``--books`` into hypertables, bytes per price-change row before and after
compressing its chunks; each figure also as bytes per day at FEED_ROWS_PER_S.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from unittest import mock

import psycopg

from bench.loader import fresh, load, trade_wal, write_wal
from loader import bookcopy
from loader import load as load_module
from loader.books import BookResult
from loader.bookstore import _change_rows
from loader.keys import token_key
from loader.load import CURRENT_PARSER, read_book_batches
from loader.runner import Runner
from loader.schema import init_db
from loader.timescale import Mode
from scripts import pgserver, tsdbserver
from tests.fakes.stream import Universe

BOOK_FRAMES = 200_000
BOOK_TRADE_SHARE = 0.01  # book events are >99% of rows in other archives
BOOK_ASSETS = 400
GOAL_BOOK_RATIO = 0.5
ROUNDS = 3
FEED_ROWS_PER_S = 1_000  # the stated feed rate for bytes per day: price-change rows/s


def book_texts(count: int) -> list[str]:
    universe = Universe(5)
    universe.add_markets(BOOK_ASSETS // 2)
    tokens = universe.tokens()
    return [universe.frame(tokens, BOOK_TRADE_SHARE, True) for _ in range(count)]


def books_load(dsn: str, wal_dir: Path) -> tuple[float, int]:
    runner = Runner(dsn, wal_dir, stop=threading.Event(), books=True)
    start = time.perf_counter()
    runner.run(once=True)
    elapsed = time.perf_counter() - start
    runner.close()
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM price_change_rows").fetchone()
    changes = int(row[0]) if row else 0
    return changes / elapsed, changes


def encoded_changes(wal_dir: Path) -> tuple[int, list[bytearray]]:
    """The load's price-change rows, parsed and encoded as binary COPY data beforehand,
    in chunks of 100,000 rows (one COPY each): (rows, chunks)."""
    result = BookResult()
    for path in sorted(wal_dir.iterdir()):
        for _end, (_trades, books) in read_book_batches(path, 0, CURRENT_PARSER):
            result.changes.extend(books.changes)
    rows = list(_change_rows(result.changes, 1, token_key, {}))
    step = 100_000
    chunks = []
    for i in range(0, len(rows), step):
        data = bytearray(bookcopy.SIGNATURE)
        bookcopy.encode_changes(rows[i : i + step], data)
        chunks.append(data + bookcopy.TRAILER)
    return len(rows), chunks


def bare_changes_rate(
    dsn: str, encoded: tuple[int, list[bytearray]], *, like_loader: bool = True
) -> float:
    """Rows/s of a bare binary COPY of the ``encoded`` rows (the client only sends
    bytes): into a table made LIKE price_change_rows, its NOT NULLs and indexes included
    (``like_loader``, the goal's baseline: what the server alone can do for the loader),
    or into an UNLOGGED table of the same columns without indexes."""
    rows, chunks = encoded
    body = ", ".join(f"{name} {kind}" for name, kind in bookcopy.CHANGE_COLUMNS)
    with psycopg.connect(dsn) as conn:
        if like_loader:
            conn.execute("CREATE TABLE bench_changes (LIKE price_change_rows INCLUDING ALL)")
        else:
            conn.execute(f"CREATE UNLOGGED TABLE bench_changes ({body})")
        conn.commit()
        statement = bookcopy.statement("bench_changes", bookcopy.CHANGE_COLUMNS)
        start = time.perf_counter()
        for data in chunks:
            with conn.transaction(), conn.cursor() as cur, cur.copy(statement) as copy:
                copy.write(data)
        elapsed = time.perf_counter() - start
        conn.execute("DROP TABLE bench_changes")
    return rows / elapsed


def _fresh_pg(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    with psycopg.connect(dsn) as conn:
        init_db(conn, mode=Mode.OFF)


def tsdb_change_bytes(book_dir: Path) -> dict[str, Any]:
    """Bytes per price-change row in a hypertable, uncompressed and compressed."""
    datadir = Path(tempfile.mkdtemp(prefix="bench-books-tsdb-"))
    try:
        dsn = tsdbserver.start(datadir)
        fresh(dsn, Mode.REQUIRE)
        _rate, changes = books_load(dsn, book_dir)
        uncompressed = _hypertable_bytes(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT compress_chunk(c, true) FROM show_chunks('price_change_rows') c")
            conn.execute("VACUUM price_change_rows")
            row = conn.execute(
                "SELECT count(*), count(DISTINCT token) FROM price_change_rows"
            ).fetchone()
        compressed = _hypertable_bytes(dsn)
    finally:
        tsdbserver.destroy(datadir)
    assert row is not None and row[0] == changes
    per_row, per_row_compressed = uncompressed / changes, compressed / changes
    print(
        f"books on timescaledb: {per_row:.0f} B/price-change row, {per_row_compressed:.1f} "
        f"compressed ({uncompressed / compressed:.1f}x)",
        file=sys.stderr,
    )
    return {
        "server": "PGlite (PostgreSQL 17 in WASM) with TimescaleDB (TSL), scripts/tsdbserver.py",
        "price_change_rows": changes,
        "tokens": int(row[1]),
        "compression": "segmentby token, orderby ts DESC (loader/bookhypertables.py)",
        "bytes_per_price_change_row_uncompressed": round(per_row, 1),
        "bytes_per_price_change_row_compressed": round(per_row_compressed, 1),
        "compression_ratio": round(uncompressed / compressed, 2),
        "bytes_per_day_uncompressed": round(per_row * FEED_ROWS_PER_S * 86_400),
        "bytes_per_day_compressed": round(per_row_compressed * FEED_ROWS_PER_S * 86_400),
    }


def _hypertable_bytes(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT hypertable_size('price_change_rows')").fetchone()
    assert row is not None
    return int(row[0])


def books_section(work: Path, frames: int = BOOK_FRAMES, trades: int = 300_000) -> dict[str, Any]:
    book_dir, trades_dir = work / "books", work / "books-trades"
    write_wal(book_dir, book_texts(frames))
    trade_wal(trades_dir, trades)
    datadir = Path(tempfile.mkdtemp(prefix="bench-books-pg-"))
    try:
        dsn = pgserver.start(datadir)
        rates, same, unindexed = [], [], []
        encoded = encoded_changes(book_dir)
        for _ in range(ROUNDS):  # alternated, best of each: the machine is shared
            _fresh_pg(dsn)
            rate, changes = books_load(dsn, book_dir)
            rates.append(rate)
            same.append(bare_changes_rate(dsn, encoded))
            unindexed.append(bare_changes_rate(dsn, encoded, like_loader=False))
        rate, bare, loose = max(rates), max(same), max(unindexed)
        with psycopg.connect(dsn) as conn:
            row = conn.execute(
                "SELECT pg_total_relation_size('price_change_rows'),"
                " (SELECT count(*) FROM book_snapshot_rows) + (SELECT count(*) FROM"
                " best_bid_ask_rows) + (SELECT count(*) FROM tick_size_change_rows)"
            ).fetchone()
            assert row is not None
            size, other_rows = int(row[0]), int(row[1])
            conn.execute("TRUNCATE trade_rows, token_keys, wal_segments, market_observations")
        trades_on, _ = load(dsn, trades_dir)
        with psycopg.connect(dsn) as conn:
            conn.execute("TRUNCATE trade_rows, token_keys, wal_segments, market_observations")
        with mock.patch.object(load_module, "scan_markets", lambda _data, _starts=None: []):
            trades_stub, _ = load(dsn, trades_dir)
    finally:
        pgserver.destroy(datadir)
    timescaledb = tsdb_change_bytes(book_dir)
    per_row = size / changes
    print(
        f"books: {rate:,.0f} price-change rows/s vs bare COPY into the same table "
        f"{bare:,.0f}/s ({rate / bare:.2f}); into an unindexed UNLOGGED one {loose:,.0f}/s "
        f"({rate / loose:.2f}); {per_row:.0f} B/row; trades-only {trades_on:,.0f}/s vs "
        f"{trades_stub:,.0f}/s without the added scan ({trades_on / trades_stub:.2f})",
        file=sys.stderr,
    )
    return {
        "mix": f"{frames} frames of the fake exchange's stream, {BOOK_TRADE_SHARE:.0%} trades",
        "price_change_rows": changes,
        "other_book_rows": other_rows,
        "price_change_rows_per_s": round(rate),
        "rounds": ROUNDS,
        "price_change_rows_per_s_each": [round(r) for r in rates],
        "baseline": {
            "what": "bare binary COPY of the same price-change rows, encoded beforehand,"
            " into a table LIKE price_change_rows (its indexes included)",
            "rows_per_s": round(bare),
            "rows_per_s_each": [round(r) for r in same],
        },
        "ratio": round(rate / bare, 3),
        "ratio_means": "--books price-change rows/s (whole load, best round) / bare COPY"
        " rows/s into the same table (best round)",
        "unindexed": {
            "what": "the same bare COPY into an UNLOGGED table of the same columns without"
            " indexes: what the index on (token, ts) costs the server",
            "rows_per_s": round(loose),
            "rows_per_s_each": [round(r) for r in unindexed],
            "loader_ratio": round(rate / loose, 3),
            "same_table_ratio": round(bare / loose, 3),
        },
        "goal_ratio": GOAL_BOOK_RATIO,
        "trades_only_books_off_per_s": round(trades_on),
        "trades_only_without_added_scan_per_s": round(trades_stub),
        "trades_only_ratio": round(trades_on / trades_stub, 3),
        "bytes_per_price_change_row": round(per_row, 1),
        "feed_price_change_rows_per_s": FEED_ROWS_PER_S,
        "bytes_per_day_uncompressed": round(per_row * FEED_ROWS_PER_S * 86_400),
        "timescaledb": timescaledb,
    }
