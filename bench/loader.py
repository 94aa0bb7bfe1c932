"""Loader benchmark, every figure against a baseline measured in the same run:

(a) on the throwaway PostgreSQL 15: ``loader run`` trades/s from segments to committed
    rows, against a bare binary COPY of the same rows (parsed beforehand) into an
    unindexed table (goal >= 0.15) (the scan of a realistic mix is in bench/archive.py);
(b) on the TimescaleDB test server (PGlite, scripts/tsdbserver.py): trades/s into a
    hypertable against plain tables on the same server (goal >= 0.9); bytes per trade
    stored, uncompressed and compressed; ``reparse --all`` seconds per million trades on
    compressed chunks against the same reparse on uncompressed chunks, and the table's
    size after the reparse against before (goal <= 1.5);
(c) ``loader run --books`` on a book-heavy mix: price-change rows/s against a bare binary
    COPY of the same rows into a table LIKE price_change_rows (goal >= 0.5), and the rest
    bench/books.py lists (``--books-only`` runs this part alone).

Trades are shaped like the real ``last_trade_price`` frames (bench/feed.py). Writes the
``loader_books``, ``loader`` and ``loader_timescaledb`` sections of bench/results.json;
the flags scale it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.feed import frames  # noqa: E402
from bench.results import write_section  # noqa: E402
from loader.load import CURRENT_PARSER, DEFAULT_BATCH_TRADES, read_batches  # noqa: E402
from loader.runner import Runner  # noqa: E402
from loader.schema import init_db  # noqa: E402
from loader.timescale import Mode  # noqa: E402
from scripts import pgserver, tsdbserver  # noqa: E402
from wal.naming import make_name  # noqa: E402
from wal.records import encode_record, frame, seal, segment_header  # noqa: E402
from wal.segment import compressor  # noqa: E402

TRADES = 1_000_000  # (a): real PostgreSQL
TSDB_TRADES = 200_000  # (b) load rates: PGlite loads ~10x slower than PostgreSQL
REPARSE_TRADES = 1_000_000  # (b) reparse: 1M trades in chunks of 200k
REPARSE_DAYS = 5
ASSETS = 2_000  # distinct tokens traded: a busy day's share of ~20,000 listed
FRAMES_PER_SEGMENT = 100_000  # ~ a 5-minute segment at a busy hour
BATCH_BYTES = 1 << 20  # the writer's default zstd frame size
BASE_NS = 1_786_728_467_000_000_000
GOAL_BARE_RATIO = 0.15
GOAL_HYPERTABLE_RATIO = 0.9
GOAL_REPARSE_GROWTH = 1.5
BARE_TABLE = """CREATE UNLOGGED TABLE IF NOT EXISTS bench_bare (ts timestamptz, token_id text,
    side text, price float8, size float8, trade_id text, market text, fee_rate_bps numeric,
    transaction_hash text, received_at timestamptz, segment_id int8)"""
BARE_TYPES = [
    "timestamptz",
    "text",
    "text",
    "float8",
    "float8",
    "text",
    "text",
    "numeric",
    "text",
    "timestamptz",
    "int8",
]


def write_wal(directory: Path, texts: list[str]) -> int:
    """Segments of FRAMES_PER_SEGMENT frames in ~1 MiB zstd frames; returns bytes written."""
    directory.mkdir(parents=True, exist_ok=True)
    cctx = compressor(3)
    total = 0
    for seq, start in enumerate(range(0, len(texts), FRAMES_PER_SEGMENT)):
        chunk = texts[start : start + FRAMES_PER_SEGMENT]
        created = BASE_NS + seq * 300 * 10**9
        lines = [encode_record(segment_header(seq, created, "bench", host="bench"))]
        lines += [encode_record(frame(created + i, 0, i, t)) for i, t in enumerate(chunk)]
        lines.append(encode_record(seal(created + len(chunk), len(lines) + 1, len(chunk))))
        out, batch, size = [], [], 0
        for line in lines:
            batch.append(line)
            size += len(line)
            if size >= BATCH_BYTES:
                out.append(cctx.compress(b"".join(batch)))
                batch, size = [], 0
        if batch:
            out.append(cctx.compress(b"".join(batch)))
        data = b"".join(out)
        (directory / make_name(seq, created).sealed_name).write_bytes(data)
        total += len(data)
    return total


def trade_wal(directory: Path, count: int, span_days: float = 0.25) -> int:
    gap = max(1, int(span_days * 86_400_000 / count))
    return write_wal(
        directory, list(frames(count, seed=7, trade_share=1.0, assets=ASSETS, mean_gap_ms=gap))
    )


def load(dsn: str, wal_dir: Path) -> tuple[float, int]:
    """(trades/s, trades) of an in-process ``loader run --once``."""
    runner = Runner(dsn, wal_dir, stop=threading.Event())
    start = time.perf_counter()
    report = runner.run(once=True)
    elapsed = time.perf_counter() - start
    runner.close()
    return report.trades / elapsed, report.trades


def reparse_all(dsn: str, wal_dir: Path) -> float:
    """Seconds of an in-process ``loader reparse --all`` (recompression included)."""
    runner = Runner(dsn, wal_dir, stop=threading.Event())
    start = time.perf_counter()
    report = runner.reparse(runner.stale_names(all_segments=True), lambda _outcome: None)
    runner.recompress()
    elapsed = time.perf_counter() - start
    runner.close()
    assert not report.corrupt and not report.stopped
    return elapsed


def bare_copy_rate(dsn: str, wal_dir: Path) -> float:
    """Binary COPY of the same rows, parsed beforehand, into an unindexed table."""
    rows: list[tuple[Any, ...]] = []
    for path in sorted(wal_dir.iterdir()):
        for _end, result in read_batches(path, 0, CURRENT_PARSER):
            rows.extend((*row, 1) for row in result.rows)
    with psycopg.connect(dsn) as conn:
        conn.execute(BARE_TABLE)
        conn.execute("TRUNCATE bench_bare")
        conn.commit()
        start = time.perf_counter()
        for i in range(0, len(rows), DEFAULT_BATCH_TRADES):
            with (
                conn.transaction(),
                conn.cursor() as cur,
                cur.copy("COPY bench_bare FROM STDIN (FORMAT BINARY)") as copy,
            ):
                copy.set_types(BARE_TYPES)
                for row in rows[i : i + DEFAULT_BATCH_TRADES]:
                    copy.write_row(row)
        elapsed = time.perf_counter() - start
        conn.execute("DROP TABLE bench_bare")
    return len(rows) / elapsed


def postgres_section(work: Path, trades: int) -> dict[str, Any]:
    trades_dir = work / "trades"
    trades_bytes = trade_wal(trades_dir, trades)
    datadir = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    try:
        dsn = pgserver.start(datadir)
        with psycopg.connect(dsn) as conn:
            init_db(conn)
        rate, loaded = load(dsn, trades_dir)
        bare = bare_copy_rate(dsn, trades_dir)
    finally:
        pgserver.destroy(datadir)
    print(f"postgres: loader {rate:,.0f}/s, bare COPY {bare:,.0f}/s", file=sys.stderr)
    return {
        "trades": loaded,
        "trades_wal_bytes": trades_bytes,
        "loader_trades_per_s": round(rate),
        "baseline": {
            "what": "binary COPY of the same rows, parsed beforehand, into an unindexed table",
            "rows_per_s": round(bare),
        },
        "ratio": round(rate / bare, 3),
        "ratio_means": "loader trades/s / bare COPY rows/s (goal >= 0.15; v1 0.05-0.09)",
        "goal_ratio": GOAL_BARE_RATIO,
        "postgres": "throwaway PostgreSQL 15 cluster, fsync off, schema v2 plain tables",
    }


def stored_bytes(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT hypertable_size('trade_rows') + pg_total_relation_size('token_keys')"
        ).fetchone()
    assert row is not None
    return int(row[0])


def set_compression(dsn: str, compressed: bool) -> None:
    verb = "compress_chunk" if compressed else "decompress_chunk"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"SELECT {verb}(c, true) FROM show_chunks('trade_rows') c")
        conn.execute("VACUUM trade_rows")


def fresh(dsn: str, mode: Mode) -> None:
    tsdbserver.clean(dsn)
    with psycopg.connect(dsn) as conn:
        init_db(conn, mode=mode)


def timescaledb_section(work: Path, trades: int, reparse_trades: int) -> dict[str, Any]:
    load_dir, reparse_dir = work / "tsdb-load", work / "tsdb-reparse"
    trade_wal(load_dir, trades)
    trade_wal(reparse_dir, reparse_trades, span_days=REPARSE_DAYS)
    datadir = Path(tempfile.mkdtemp(prefix="bench-tsdb-"))
    try:
        dsn = tsdbserver.start(datadir)
        fresh(dsn, Mode.OFF)
        plain, _ = load(dsn, load_dir)
        fresh(dsn, Mode.AUTO)
        hyper, _ = load(dsn, load_dir)
        fresh(dsn, Mode.AUTO)
        _, loaded = load(dsn, reparse_dir)
        uncompressed = stored_bytes(dsn)
        set_compression(dsn, True)
        compressed = stored_bytes(dsn)
        reparse_compressed = reparse_all(dsn, reparse_dir)
        after = stored_bytes(dsn)
        set_compression(dsn, False)
        reparse_plain = reparse_all(dsn, reparse_dir)
        with psycopg.connect(dsn) as conn:
            chunk_rows = conn.execute(
                "SELECT min(n), max(n) FROM (SELECT count(*) n FROM trade_rows"
                " GROUP BY time_bucket(INTERVAL '1 day', ts)) c"
            ).fetchone()
    finally:
        tsdbserver.destroy(datadir)
    per_million = 1_000_000 / loaded
    print(
        f"timescaledb: hypertable {hyper:,.0f}/s vs plain {plain:,.0f}/s; reparse "
        f"{reparse_compressed * per_million:.1f} s/M compressed vs "
        f"{reparse_plain * per_million:.1f} s/M plain; size {after / compressed:.2f}x",
        file=sys.stderr,
    )
    return {
        "server": "PGlite 0.3.14 (PostgreSQL 17.5 in WASM) with TimescaleDB 2.23 (TSL)",
        "load_trades": trades,
        "hypertable_trades_per_s": round(hyper),
        "baseline": {"what": "plain tables on the same server", "trades_per_s": round(plain)},
        "ratio": round(hyper / plain, 3),
        "ratio_means": "hypertable trades/s / plain tables trades/s (goal >= 0.9)",
        "goal_ratio": GOAL_HYPERTABLE_RATIO,
        "bytes_per_trade_uncompressed": round(uncompressed / loaded, 1),
        "bytes_per_trade_compressed": round(compressed / loaded, 1),
        "reparse_trades": loaded,
        "reparse_chunk_rows_min_max": list(chunk_rows) if chunk_rows else None,
        "reparse_s_per_million_compressed": round(reparse_compressed * per_million, 2),
        "reparse_s_per_million_uncompressed": round(reparse_plain * per_million, 2),
        "reparse_compressed_vs_uncompressed": round(reparse_compressed / reparse_plain, 3),
        "size_after_reparse_vs_before": round(after / compressed, 3),
        "goal_size_after_reparse_vs_before": GOAL_REPARSE_GROWTH,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trades", type=int, default=TRADES)
    parser.add_argument("--tsdb-trades", type=int, default=TSDB_TRADES)
    parser.add_argument("--reparse-trades", type=int, default=REPARSE_TRADES)
    parser.add_argument("--skip-timescaledb", action="store_true")
    parser.add_argument("--books-only", action="store_true", help="only the books section")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        from bench.books import books_section  # it imports this module's helpers

        write_section("loader_books", books_section(Path(tmp)))
        if args.books_only:
            return
        write_section("loader", postgres_section(Path(tmp), args.trades))
        if not args.skip_timescaledb:
            write_section(
                "loader_timescaledb",
                timescaledb_section(Path(tmp), args.tsdb_trades, args.reparse_trades),
            )


if __name__ == "__main__":
    main()
