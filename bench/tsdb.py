"""TimescaleDB test server benchmark: what the PGlite harness costs against real PostgreSQL.

Measures, in one run: the boot time of scripts/tsdb/server.mjs; binary COPY rows/s of
trade-like rows into a plain table and into a hypertable (1-day chunks) through it;
the same COPY into the real PostgreSQL of scripts/pgserver.py (the baseline, measured
in the same run; its hypertable only when that server has timescaledb); the node
process's memory. Writes the ``tsdb`` section of bench/results.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import write_section  # noqa: E402
from scripts import pgserver, tsdbserver  # noqa: E402

ROWS = 200_000  # the test suite's largest COPY
REPEATS = 3  # median of three: the machine is shared
DAYS = 10  # rows spread over ten 1-day chunks, like the loader's field measurements
TABLE = (
    "CREATE TABLE {name} (ts timestamptz NOT NULL, token_id text NOT NULL, "
    "price float8 NOT NULL, size float8 NOT NULL, tx text NOT NULL)"
)
COPY = "COPY {name} (ts, token_id, price, size, tx) FROM STDIN (FORMAT BINARY)"
TYPES = ["timestamptz", "text", "float8", "float8", "text"]


def make_rows(count: int) -> list[tuple[Any, ...]]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    step = timedelta(days=DAYS) / count
    return [
        (start + i * step, f"token-{i % 500}", (i % 997) / 1000, i % 1000 / 10, f"0x{i:064x}")
        for i in range(count)
    ]


def copy_rate(dsn: str, rows: list[tuple[Any, ...]], hypertable: bool) -> float:
    """Median rows/s of REPEATS binary COPYs into a fresh table."""
    rates = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(REPEATS):
            conn.execute("DROP TABLE IF EXISTS bench_copy")
            conn.execute(TABLE.format(name="bench_copy"))
            if hypertable:
                conn.execute(
                    "SELECT create_hypertable('bench_copy', 'ts', "
                    "chunk_time_interval => '1 day'::interval)"
                )
            started = time.perf_counter()
            sql = COPY.format(name="bench_copy")
            with conn.transaction(), conn.cursor() as cur, cur.copy(sql) as copy:
                copy.set_types(TYPES)
                for row in rows:
                    copy.write_row(row)
            rates.append(len(rows) / (time.perf_counter() - started))
            count = conn.execute("SELECT count(*) FROM bench_copy").fetchone()
            assert count == (len(rows),), count
        conn.execute("DROP TABLE bench_copy")
    return statistics.median(rates)


def memory_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def has_timescaledb(dsn: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        except psycopg.Error:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=ROWS)
    args = parser.parse_args(argv)
    rows = make_rows(args.rows)
    pg_dir = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    ts_dir = Path(tempfile.mkdtemp(prefix="bench-tsdb-"))
    try:
        pg_dsn = pgserver.start(pg_dir)
        started = time.perf_counter()
        ts_dsn = tsdbserver.start(ts_dir)
        boot_s = time.perf_counter() - started
        pid = tsdbserver.pid(ts_dir)
        assert pid is not None
        idle = memory_kb(pid)
        tsdbserver.clean(ts_dsn)
        pg_plain = copy_rate(pg_dsn, rows, hypertable=False)
        pg_hyper = copy_rate(pg_dsn, rows, hypertable=True) if has_timescaledb(pg_dsn) else None
        ts_plain = copy_rate(ts_dsn, rows, hypertable=False)
        ts_hyper = copy_rate(ts_dsn, rows, hypertable=True)
        after = memory_kb(pid)
    finally:
        tsdbserver.destroy(ts_dir)
        pgserver.destroy(pg_dir)
    baseline_hyper = pg_hyper or pg_plain
    write_section(
        "tsdb",
        {
            "rows": args.rows,
            "boot_s": round(boot_s, 2),
            "baseline": {
                "what": "the same binary COPY into the real PostgreSQL of scripts/pgserver.py",
                "plain_rows_per_s": round(pg_plain),
                "hypertable_rows_per_s": round(pg_hyper) if pg_hyper else None,
            },
            "pglite_plain_rows_per_s": round(ts_plain),
            "pglite_hypertable_rows_per_s": round(ts_hyper),
            "ratio_plain": round(ts_plain / pg_plain, 3),
            "ratio_hypertable": round(ts_hyper / baseline_hyper, 3),
            "ratio_hypertable_against": "hypertable" if pg_hyper else "plain table",
            "node_rss_mb": {
                "after_boot": round(idle["VmRSS"] / 1024),
                "after_copies": round(after["VmRSS"] / 1024),
                "peak": round(after["VmHWM"] / 1024),
            },
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
