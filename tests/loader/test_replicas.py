"""Two replicas of a shard into real PostgreSQL: every trade once, gaps only where both
replicas were down, the same under SIGKILL and after ``reparse --all``."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from loader.carry import ns_time
from tests.loader import replica_wal
from tests.loader.conftest import (
    ROOT,
    check_counts_match_table,
    committed_trades,
    db_trades,
    loader_cmd,
    run_loader,
)
from tests.loader.helpers import DB_TRADE_KEYS, opened, subscribed, trade_frame, write_segment
from tests.timeouts import TIMEOUT_S

BOTH_DOWN = (200, 230)  # spans the segment boundary after event 210
KILLS = 4


def loaded_keys(dsn: str) -> Counter[Any]:
    with psycopg.connect(dsn) as conn:
        return Counter(conn.execute(DB_TRADE_KEYS).fetchall())


def db_gaps(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT started_at, ended_at, token_ids, cause, segment_id FROM gaps ORDER BY 1"
        ).fetchall()


def expected_gaps(wal: replica_wal.ReplicaWal) -> list[tuple[datetime, datetime]]:
    return [(ns_time(a), ns_time(b)) for a, b in wal.gaps]


def load_once(dsn: str, wal_dir: Path) -> None:
    result = run_loader(dsn, "run", "--wal-dir", str(wal_dir), "--once", "--batch-trades", "7")
    assert result.returncode == 0, result.stderr


def test_replicas_dropping_in_turn_load_every_trade_once_and_leave_no_gap(
    db: str, wal_dir: Path
) -> None:
    wal = replica_wal.build(wal_dir)
    load_once(db, wal_dir)
    assert loaded_keys(db) == wal.trades
    assert max(wal.trades.values()) == 2  # the identical fills are there, twice
    assert db_gaps(db) == []
    check_counts_match_table(db)


def test_both_replicas_down_at_once_leave_one_gap_covering_the_drop(db: str, wal_dir: Path) -> None:
    wal = replica_wal.build(wal_dir, both_down=BOTH_DOWN)
    load_once(db, wal_dir)
    assert loaded_keys(db) == wal.trades
    gaps = db_gaps(db)
    assert [(g[0], g[1]) for g in gaps] == expected_gaps(wal)
    assert gaps[0][2] == sorted(replica_wal.SHARD_ASSETS) and gaps[0][3] == "close 1006"
    with psycopg.connect(db) as conn:
        pieces = conn.execute("SELECT count(*) FROM gap_rows").fetchone()
    assert pieces == (2,)  # left open by one segment, ended by the next


def test_sigkill_during_a_replica_load_gives_the_same_rows_and_gaps(db: str, wal_dir: Path) -> None:
    wal = replica_wal.build(wal_dir, both_down=BOTH_DOWN)
    rng = random.Random(11)
    total, mid_load = sum(wal.trades.values()), 0
    for _ in range(KILLS):
        before = committed_trades(db)
        child = subprocess.Popen(
            loader_cmd("--dsn", db, "run", "--wal-dir", str(wal_dir), "--batch-trades", "3"),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + TIMEOUT_S
        while committed_trades(db) <= before and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.05))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=TIMEOUT_S)
        check_counts_match_table(db)
        mid_load += before < committed_trades(db) < total
    assert mid_load >= KILLS // 2, "the kills should land while loading"
    load_once(db, wal_dir)
    assert loaded_keys(db) == wal.trades
    assert [(g[0], g[1]) for g in db_gaps(db)] == expected_gaps(wal)


def test_reparse_all_leaves_identical_trades_and_gaps(db: str, wal_dir: Path) -> None:
    replica_wal.build(wal_dir, both_down=BOTH_DOWN)
    load_once(db, wal_dir)
    trades, gaps = db_trades(db), db_gaps(db)
    result = run_loader(db, "reparse", "--wal-dir", str(wal_dir), "--all")
    assert result.returncode == 0, result.stderr
    assert db_trades(db) == trades and db_gaps(db) == gaps
    check_counts_match_table(db)


def test_a_trade_ending_one_segment_on_replica_0_and_starting_the_next_on_replica_1_is_one_row(
    db: str, wal_dir: Path
) -> None:
    first, again = trade_frame(1, conn=0), trade_frame(1, conn=1)
    again["ts_ns"] += 1_000_000
    write_segment(
        wal_dir,
        0,
        [
            [opened(first["ts_ns"] - 9, 0, 0, 0), subscribed(first["ts_ns"] - 8, 0, ["a"])],
            [opened(first["ts_ns"] - 7, 1, 0, 1), subscribed(first["ts_ns"] - 6, 1, ["a"])],
            [first],
        ],
    )
    write_segment(wal_dir, 1, [[again, trade_frame(2, conn=1)]])
    load_once(db, wal_dir)
    assert sum(db_trades(db).values()) == 2
    result = run_loader(db, "reparse", "--wal-dir", str(wal_dir), "--all")
    assert result.returncode == 0, result.stderr
    assert sum(db_trades(db).values()) == 2


def test_without_shard_fields_identical_events_on_two_connections_stay_two_rows(
    db: str, wal_dir: Path
) -> None:
    write_segment(wal_dir, 0, [[trade_frame(1, conn=0), trade_frame(1, conn=1)]])
    load_once(db, wal_dir)
    assert sum(db_trades(db).values()) == 2
