"""Exactly-once under SIGKILL: a child ``loader run`` killed at random points, again and
again, then a final run. The table must equal the expected multiset exactly."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path

import psycopg

from tests.loader.conftest import ROOT, db_trades, expected_trades, loader_cmd, run_loader, sealed
from tests.loader.helpers import text_frame, trade_event, trade_frame, write_segment
from tests.timeouts import TIMEOUT_S, scaled
from wal.records import frame

ROUNDS = 24
SEGMENTS = 14
FRAMES_PER_SEGMENT = 40
TRADES_PER_FRAME = 20
BATCH_TRADES = 25  # many small transactions: many places for a kill to land


def build_wal(wal_dir: Path) -> None:
    i = 0
    for seq in range(SEGMENTS):
        batches = []
        for _ in range(FRAMES_PER_SEGMENT):
            events = [trade_event(i + k) for k in range(TRADES_PER_FRAME - 1)]
            events.append(trade_event(i, price="7"))  # invalid: counted, never loaded
            batches.append(
                [
                    frame(trade_frame(i)["ts_ns"], 0, i, json.dumps(events)),
                    trade_frame(i),  # the same trade again: kept twice, no dedup
                    text_frame(i, "PONG"),
                ]
            )
            i += TRADES_PER_FRAME
        write_segment(wal_dir, seq, batches)


def test_sigkill_at_random_points_loses_and_doubles_nothing(db: str, wal_dir: Path) -> None:
    build_wal(wal_dir)
    rng = random.Random(4)
    total = SEGMENTS * FRAMES_PER_SEGMENT * TRADES_PER_FRAME
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
    with psycopg.connect(db) as conn:
        errors, statuses = conn.execute(
            "SELECT sum(parse_errors), array_agg(DISTINCT status) FROM wal_segments"
        ).fetchone()
    assert errors == SEGMENTS * FRAMES_PER_SEGMENT and statuses == ["loaded"]


def committed_trades(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT coalesce(sum(trades), 0) FROM wal_segments").fetchone()
    return int(row[0]) if row else 0


def wait_for_progress(dsn: str, before: int) -> None:
    if before >= SEGMENTS * FRAMES_PER_SEGMENT * TRADES_PER_FRAME:
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
