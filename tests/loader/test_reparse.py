"""``loader reparse``: idempotence, the parser-fix story, bounded deletes, errors."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from loader.errors import SegmentNameError
from loader.load import Parser
from loader.parse import PARSER_VERSION, BatchResult, ParseError, scan_batch
from loader.runner import Runner
from tests.loader.conftest import (
    ROOT,
    check_counts_match_table,
    committed_trades,
    db_trades,
    expected_trades,
    loader_cmd,
    run_loader,
    sealed,
    segments,
    wait_for_progress,
)
from tests.loader.helpers import DROP, build_wal, trade_event, trade_frame, write_segment
from tests.timeouts import TIMEOUT_S
from wal.records import frame


def trades_by_segment(dsn: str) -> dict[int, int]:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("SELECT segment_id, count(*) FROM trades GROUP BY 1").fetchall())


def counts(dsn: str) -> dict[str, tuple[Any, ...]]:
    keys = ("status", "offset_bytes", "records", "frames", "trades", "parse_errors")
    keys += ("first_event_at", "last_event_at", "parser_version")
    return {name: tuple(row[k] for k in keys) for name, row in segments(dsn).items()}


def write_wal(wal_dir: Path) -> None:
    for seq in range(3):
        write_segment(
            wal_dir,
            seq,
            [[trade_frame(seq * 100 + i) for i in range(b, b + 5)] for b in range(0, 20, 5)],
        )


def test_reparse_twice_leaves_identical_rows_and_counts(db: str, wal_dir: Path) -> None:
    write_wal(wal_dir)
    assert run_loader(db, "run", "--wal-dir", str(wal_dir), "--once").returncode == 0
    before_rows, before_counts = db_trades(db), counts(db)
    before_ids = trades_by_segment(db)
    for _ in range(2):
        done = run_loader(db, "reparse", "--wal-dir", str(wal_dir), "--all", "--batch-trades", "7")
        assert done.returncode == 0, done.stderr
        assert "reparsed 3 segments, 60 trades" in done.stderr
        assert db_trades(db) == before_rows == expected_trades(sealed(wal_dir))
        assert counts(db) == before_counts
        assert trades_by_segment(db) == before_ids


def test_reparse_one_segment_touches_only_its_rows(db: str, wal_dir: Path) -> None:
    write_wal(wal_dir)
    run_loader(db, "run", "--wal-dir", str(wal_dir), "--once")
    name = sealed(wal_dir)[1].name
    with psycopg.connect(db) as conn:  # a row of another segment with a time inside its range
        conn.execute(
            "INSERT INTO trade_rows SELECT ts, token, buy, price, size, fee_rate_bps, tx_hash,"
            " tx_hash_text, received_at, (SELECT id FROM wal_segments"
            " WHERE name = %s) FROM trade_rows t JOIN wal_segments s ON s.id = t.segment_id"
            " WHERE s.name = %s LIMIT 1",
            (sealed(wal_dir)[0].name, name),
        )
    before = trades_by_segment(db)
    done = run_loader(db, "reparse", "--wal-dir", str(wal_dir), "--segment", name)
    assert done.returncode == 0, done.stderr
    assert trades_by_segment(db) == before


def old_scan(lines: list[bytes], **kwargs: Any) -> BatchResult:
    """What parser v(N-1) did: it refused trades without fee_rate_bps (the bug fixed in vN)."""
    result = scan_batch(lines, **kwargs)
    refused = [row for row in result.rows if row.fee_rate_bps is None]
    result.rows = [row for row in result.rows if row.fee_rate_bps is not None]
    result.errors += [
        ParseError("fee_rate_bps is missing", kwargs["segment"], kwargs["offset"]) for _ in refused
    ]
    return result


def test_parser_fix_story_reparse_stale_picks_up_what_the_old_parser_refused(
    db: str, wal_dir: Path
) -> None:
    no_fee = [
        frame(trade_frame(i)["ts_ns"], 0, i, json.dumps(trade_event(i, fee_rate_bps=DROP)))
        for i in range(50, 54)
    ]
    write_segment(wal_dir, 0, [[trade_frame(1), trade_frame(2)]])  # loaded by the new parser
    write_segment(wal_dir, 1, [[trade_frame(3), *no_fee]])
    old = Runner(db, wal_dir, stop=threading.Event(), parser=Parser(PARSER_VERSION - 1, old_scan))
    try:
        old.run(once=True)
    finally:
        old.close()
    stale_name = sealed(wal_dir)[1].name
    assert segments(db)[stale_name]["parse_errors"] == 4
    assert segments(db)[stale_name]["parser_version"] == PARSER_VERSION - 1
    assert sum(db_trades(db).values()) == 3 + 2 - 2  # the old parser kept fee-less ones out

    status = json.loads(run_loader(db, "status", "--wal-dir", str(wal_dir), "--json").stdout)
    assert status["stale_segments"] == 2  # both went through the old parser
    done = run_loader(db, "reparse", "--wal-dir", str(wal_dir), "--stale")
    assert done.returncode == 0, done.stderr
    assert db_trades(db) == expected_trades(sealed(wal_dir))
    assert sum(db_trades(db).values()) == 7
    seg = segments(db)[stale_name]
    assert (seg["parse_errors"], seg["parser_version"], seg["trades"]) == (0, PARSER_VERSION, 5)
    again = run_loader(db, "reparse", "--wal-dir", str(wal_dir), "--stale")
    assert again.returncode == 0 and "nothing to reparse" in again.stderr


def test_reparse_of_a_corrupt_segment_keeps_it_corrupt_with_the_same_rows(
    db: str, wal_dir: Path
) -> None:
    path = write_segment(wal_dir, 0, [[trade_frame(i)] for i in range(4)])
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # inside the last frame (the one with the seal)
    path.write_bytes(bytes(data))
    assert run_loader(db, "run", "--wal-dir", str(wal_dir), "--once").returncode == 1
    before = (db_trades(db), counts(db))
    done = run_loader(db, "reparse", "--wal-dir", str(wal_dir), "--segment", path.name)
    assert done.returncode == 1 and "corrupt" in done.stderr
    assert (db_trades(db), counts(db)) == before
    assert counts(db)[path.name][0] == "corrupt"


def test_reparse_of_a_segment_not_in_the_wal_dir_is_a_usage_error(db: str, wal_dir: Path) -> None:
    done = run_loader(
        db,
        "reparse",
        "--wal-dir",
        str(wal_dir),
        "--segment",
        "000000000009-20260101T000000Z.jsonl.zst",
    )
    assert done.returncode == 2, done.stderr  # a usage error, before any database work
    assert "no such segment file" in done.stderr and "Traceback" not in done.stderr
    assert "readable" not in done.stderr  # not told to fix permissions of a missing file


def test_reparse_needs_exactly_one_selection(db: str, wal_dir: Path) -> None:
    for args in ([], ["--all", "--stale"], ["--all", "--segment", "x"]):
        done = run_loader(db, "reparse", "--wal-dir", str(wal_dir), *args)
        assert done.returncode == 2, args
        assert "exactly one" in done.stderr


def test_reparse_while_run_is_loading_leaves_exactly_the_expected_rows(
    db: str, wal_dir: Path
) -> None:
    build_wal(wal_dir)
    expected = expected_trades(sealed(wal_dir))
    child = subprocess.Popen(
        loader_cmd("--dsn", db, "run", "--wal-dir", str(wal_dir), "--batch-trades", "25"),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_progress(db, 0)
        for _ in range(2):
            done = run_loader(db, "reparse", "--wal-dir", str(wal_dir), "--all")
            assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + TIMEOUT_S * 3
        while db_trades(db) != expected and time.monotonic() < deadline:
            time.sleep(0.1)
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=TIMEOUT_S)
    finally:
        child.kill()
    assert child.returncode == 0, stderr
    assert db_trades(db) == expected
    assert committed_trades(db) == sum(expected.values())
    check_counts_match_table(db)


def test_reparse_refuses_an_open_segment_so_run_loads_it_once_when_sealed(
    db: str, wal_dir: Path
) -> None:
    sealed_path = write_segment(wal_dir, 0, [[trade_frame(i)] for i in range(3)])
    open_path = sealed_path.with_name(sealed_path.name + ".open")
    sealed_path.rename(open_path)  # still being written, as far as anyone can tell
    for arg in (open_path.name, str(open_path)):
        done = run_loader(db, "reparse", "--wal-dir", str(wal_dir), "--segment", arg)
        assert done.returncode == 2, done.stderr
        assert "only sealed segments can be reparsed" in done.stderr
        assert f"{open_path.name} is still being written" in done.stderr
        assert "Traceback" not in done.stderr
    assert segments(db) == {} and db_trades(db) == {}

    open_path.rename(sealed_path)  # sealed: run loads it, each trade once
    assert run_loader(db, "run", "--wal-dir", str(wal_dir), "--once").returncode == 0
    assert db_trades(db) == expected_trades([sealed_path])
    assert sum(db_trades(db).values()) == 3 and list(segments(db)) == [sealed_path.name]


def test_reparse_refuses_a_file_that_is_no_segment(db: str, wal_dir: Path) -> None:
    (wal_dir / "capture.status.json").write_text("{}")
    for arg in ("capture.status.json", str(wal_dir / "capture.status.json"), "x/"):
        done = run_loader(db, "reparse", "--wal-dir", str(wal_dir), "--segment", arg)
        assert done.returncode == 2, done.stderr
        assert "is not a segment name" in done.stderr and "Traceback" not in done.stderr
    assert segments(db) == {}


def test_reparse_checks_names_before_connecting(wal_dir: Path) -> None:
    unreachable = "host=127.0.0.1 port=1 dbname=x connect_timeout=2"
    done = run_loader(unreachable, "reparse", "--wal-dir", str(wal_dir), "--segment", "junk")
    assert done.returncode == 2 and "junk' is not a segment name" in done.stderr
    assert "cannot use the database" not in done.stderr


def test_runner_reparse_refuses_bad_names_before_any_database_work(db: str, wal_dir: Path) -> None:
    good = write_segment(wal_dir, 0, [[trade_frame(1)]])
    (wal_dir / "000000000001-20260101T000000Z.jsonl.zst.open").write_bytes(b"")
    runner = Runner(db, wal_dir, stop=threading.Event())
    try:
        for bad in ("000000000001-20260101T000000Z.jsonl.zst.open", "capture.status.json"):
            with pytest.raises(SegmentNameError):
                runner.reparse([good.name, bad], lambda _outcome: None)
    finally:
        runner.close()
    assert segments(db) == {}  # not even the good one: names are checked first
