"""Loader test fixtures: an initialised database, a WAL directory, a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from loader.parse import parse_frame
from loader.schema import init_db
from tests.loader.helpers import CRASH_WAL_TRADES
from tests.timeouts import TIMEOUT_S
from wal import SegmentReader, list_sealed

ROOT = Path(__file__).resolve().parents[2]
TRADE_COLUMNS = (
    "ts, token_id, side, price, size, trade_id, market, fee_rate_bps, transaction_hash, received_at"
)


@pytest.fixture
def db(fresh_db: str) -> str:
    """DSN of a fresh database with the loader schema."""
    with psycopg.connect(fresh_db) as conn:
        init_db(conn)
    return fresh_db


@pytest.fixture
def wal_dir(tmp_path: Path) -> Path:
    path = tmp_path / "wal"
    path.mkdir()
    return path


def loader_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "loader.cli", *args]


def run_loader(
    dsn: str, *args: str, timeout: float = TIMEOUT_S * 3, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``loader --dsn DSN ARGS`` in a child process."""
    return subprocess.run(
        loader_cmd("--dsn", dsn, *args),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        check=False,
    )


def server_has_timescaledb(dsn: str) -> bool:
    """Whether the test server has the timescaledb extension installed (then the throwaway
    cluster preloads it, and init-db's default makes hypertables)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"
        ).fetchone()
    return bool(row and row[0])


def concurrent_init_db(dsn: str, count: int = 4) -> list[tuple[int, str, str]]:
    """``count`` ``loader init-db`` processes started together: (exit code, stdout, stderr)."""
    children = [
        subprocess.Popen(
            loader_cmd("--dsn", dsn, "init-db"),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    return [(c.wait(timeout=TIMEOUT_S * 6), *c.communicate()) for c in children]


def db_trades(dsn: str) -> Counter[tuple[Any, ...]]:
    """The trades table as a multiset of rows (without segment_id)."""
    with psycopg.connect(dsn) as conn:
        return Counter(conn.execute(f"SELECT {TRADE_COLUMNS} FROM trades").fetchall())


def expected_trades(paths: Iterable[Path]) -> Counter[tuple[Any, ...]]:
    """What the current parser makes of every frame in ``paths``."""
    rows: Counter[tuple[Any, ...]] = Counter()
    for path in paths:
        for _offset, rec in SegmentReader(path).records():
            if rec["type"] == "frame":
                rows.update(tuple(row) for row in parse_frame(rec)[0])
    return rows


def segments(dsn: str) -> dict[str, dict[str, Any]]:
    """wal_segments rows by name, as dicts."""
    with psycopg.connect(dsn) as conn, conn.cursor(row_factory=dict_row) as cur:
        return {row["name"]: row for row in cur.execute("SELECT * FROM wal_segments")}


def sealed(wal_dir: Path) -> list[Path]:
    return list_sealed(wal_dir)


def committed_trades(dsn: str) -> int:
    """Trades the segments say are committed."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT coalesce(sum(trades), 0) FROM wal_segments").fetchone()
    return int(row[0]) if row else 0


def wait_for_progress(dsn: str, before: int) -> None:
    """Until more than ``before`` trades are committed (of the crash WAL)."""
    if before >= CRASH_WAL_TRADES:
        return  # all loaded: nothing to wait for
    deadline = time.monotonic() + TIMEOUT_S
    while committed_trades(dsn) <= before and time.monotonic() < deadline:
        time.sleep(0.005)


def check_counts_match_table(dsn: str) -> None:
    """Each segment's committed trade count equals its rows: offsets and rows moved together."""
    with psycopg.connect(dsn) as conn:
        mismatched = conn.execute(
            "SELECT s.name, s.trades, count(t.segment_id) FROM wal_segments s"
            " LEFT JOIN trades t ON t.segment_id = s.id GROUP BY s.id"
            " HAVING s.trades <> count(t.segment_id)"
        ).fetchall()
    assert mismatched == []
