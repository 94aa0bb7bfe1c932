"""Gaps across segments in PostgreSQL: a crash, a gap still open, a reparse of one part."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from loader.carry import ns_time
from tests.loader.conftest import run_loader, sealed
from tests.loader.helpers import BASE_NS, opened, subscribed, trade_frame, write_segment
from wal.records import conn_close

S = 1_000_000_000
ASSETS = ["a1", "a2"]


def gaps(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT shard, started_at, ended_at, token_ids, cause FROM gaps ORDER BY 2"
        ).fetchall()


def run_once(dsn: str, wal_dir: Path) -> None:
    result = run_loader(dsn, "run", "--wal-dir", str(wal_dir), "--once")
    assert result.returncode == 0, result.stderr


def reparse(dsn: str, wal_dir: Path, *args: str) -> None:
    result = run_loader(dsn, "reparse", "--wal-dir", str(wal_dir), *args)
    assert result.returncode == 0, result.stderr


def test_a_crash_is_a_capture_down_gap_from_the_last_record_to_the_next_subscribe(
    db: str, wal_dir: Path
) -> None:
    last = trade_frame(5, conn=0)
    start = [opened(BASE_NS - 2 * S, 0, 0, 0), subscribed(BASE_NS - S, 0, ASSETS)]
    write_segment(wal_dir, 0, [start, [trade_frame(1, conn=0), last]], recovered=True)
    again = [opened(BASE_NS + 9 * S, 0, 0, 0), subscribed(BASE_NS + 10 * S, 0, ASSETS)]
    write_segment(wal_dir, 1, [again, [trade_frame(11 * 1_000_000, conn=0)]])
    run_once(db, wal_dir)
    down = ("s0", ns_time(last["ts_ns"]), ns_time(BASE_NS + 10 * S), ASSETS, "capture_down")
    assert gaps(db) == [down]
    reparse(db, wal_dir, "--segment", sealed(wal_dir)[0].name)
    assert gaps(db) == [down]


def test_a_gap_stays_open_across_segments_until_a_replica_subscribes(
    db: str, wal_dir: Path
) -> None:
    start = [opened(BASE_NS - 2 * S, 0), subscribed(BASE_NS - S, 0, ASSETS)]
    write_segment(wal_dir, 0, [start, [conn_close(BASE_NS, 0, "u", 1006, "")]])
    write_segment(wal_dir, 1, [[opened(BASE_NS + S, 0)]])
    run_once(db, wal_dir)
    opened_gap = ("c0", ns_time(BASE_NS), None, ASSETS, "close 1006")
    assert gaps(db) == [opened_gap]
    write_segment(wal_dir, 2, [[subscribed(BASE_NS + 3 * S, 0, ASSETS)]])
    run_once(db, wal_dir)
    ended = ("c0", ns_time(BASE_NS), ns_time(BASE_NS + 3 * S), ASSETS, "close 1006")
    assert gaps(db) == [ended]
    for name in (p.name for p in sealed(wal_dir)):  # each part alone: the same gap
        reparse(db, wal_dir, "--segment", name)
        assert gaps(db) == [ended]
