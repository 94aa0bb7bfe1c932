"""Exactly-once under SIGKILL: a child ``loader run`` killed at random points, again and
again, then a final run. The table must equal the expected multiset exactly."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import psycopg

from tests.loader.conftest import (
    ROOT,
    check_counts_match_table,
    committed_trades,
    db_trades,
    expected_trades,
    loader_cmd,
    run_loader,
    sealed,
    wait_for_progress,
)
from tests.loader.helpers import CRASH_WAL_FRAMES, CRASH_WAL_TRADES, DB_TRADE_KEYS, build_wal
from tests.timeouts import TIMEOUT_S

ROUNDS = 24
BATCH_TRADES = 25  # many small transactions: many places for a kill to land


def test_sigkill_at_random_points_loses_and_doubles_nothing(db: str, wal_dir: Path) -> None:
    written = build_wal(wal_dir)
    rng = random.Random(4)
    total = CRASH_WAL_TRADES
    killed_mid_load = 0
    for _ in range(ROUNDS):
        before = committed_trades(db)
        child = subprocess.Popen(
            loader_cmd(
                "--dsn", db, "run", "--wal-dir", str(wal_dir), "--batch-trades", str(BATCH_TRADES)
            ),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if rng.random() < 0.2:
            time.sleep(rng.uniform(0.0, 0.3))  # during start-up or the first transaction
        else:
            wait_for_progress(db, before)  # then land somewhere in the next transactions
            time.sleep(rng.uniform(0.0, 0.03))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=TIMEOUT_S)
        loaded = sum(db_trades(db).values())
        killed_mid_load += before < loaded < total
        check_counts_match_table(db)
    assert killed_mid_load >= ROUNDS // 2, "the kills should land while loading"
    final = run_loader(db, "run", "--wal-dir", str(wal_dir), "--once")
    assert final.returncode == 0, final.stderr
    assert db_trades(db) == expected_trades(sealed(wal_dir))
    check_counts_match_table(db)
    # Not only what the parser under test makes of the WAL: what the builder wrote.
    assert sum(db_trades(db).values()) == committed_trades(db) == CRASH_WAL_TRADES
    with psycopg.connect(db) as conn:
        loaded = Counter(conn.execute(DB_TRADE_KEYS).fetchall())
    assert loaded == written
    with psycopg.connect(db) as conn:
        errors, statuses = conn.execute(
            "SELECT sum(parse_errors), array_agg(DISTINCT status) FROM wal_segments"
        ).fetchone()
    assert errors == CRASH_WAL_FRAMES and statuses == ["loaded"]
