"""loader/load.py and loader/runner.py in process: loading, resuming, corruption."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from loader.errors import LoaderBusyError
from loader.load import Parser, SegmentLoader
from loader.parse import scan_batch
from loader.runner import Runner
from loader.store import ensure_segment
from tests.loader.conftest import db_trades, expected_trades, sealed, segments
from tests.loader.helpers import frame_offsets, text_frame, trade_event, trade_frame, write_segment
from wal.records import frame


def make_wal(wal_dir: Path, n_segments: int = 3, batches: int = 4, per_batch: int = 10) -> None:
    for seq in range(n_segments):
        write_segment(
            wal_dir,
            seq,
            [
                [trade_frame(seq * 1000 + b * 100 + i) for i in range(per_batch)]
                + [text_frame(b, "PONG")]
                for b in range(batches)
            ],
        )


def run_once(dsn: str, wal_dir: Path, **kwargs: Any) -> Any:
    runner = Runner(dsn, wal_dir, stop=threading.Event(), **kwargs)
    try:
        return runner.run(once=True)
    finally:
        runner.close()


def test_run_loads_every_sealed_segment_exactly(db: str, wal_dir: Path) -> None:
    make_wal(wal_dir)
    report = run_once(db, wal_dir, batch_trades=7)
    assert len(report.loaded) == 3 and report.trades == 120
    assert db_trades(db) == expected_trades(sealed(wal_dir))
    for path in sealed(wal_dir):
        seg = segments(db)[path.name]
        assert (seg["status"], seg["offset_bytes"]) == ("loaded", path.stat().st_size)
        assert (seg["trades"], seg["frames"], seg["records"]) == (40, 44, 46)
        assert seg["first_event_at"] is not None and seg["loaded_at"] is not None


def test_run_never_reads_open_segments(db: str, wal_dir: Path) -> None:
    path = write_segment(wal_dir, 0, [[trade_frame(1)]])
    path.rename(path.with_name(path.name + ".open"))
    run_once(db, wal_dir)
    assert segments(db) == {} and db_trades(db) == {}


def test_run_a_second_time_loads_nothing_more(db: str, wal_dir: Path) -> None:
    make_wal(wal_dir)
    run_once(db, wal_dir)
    assert run_once(db, wal_dir).trades == 0
    assert sum(db_trades(db).values()) == 120


def test_load_resumes_from_the_committed_offset_after_a_crash(db: str, wal_dir: Path) -> None:
    make_wal(wal_dir, n_segments=1, batches=6)
    path = sealed(wal_dir)[0]

    class Crash(BaseException):
        pass

    calls = 0

    def crashing_scan(lines: list[bytes], **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 4:
            raise Crash()
        return scan_batch(lines, **kwargs)

    with psycopg.connect(db) as conn:
        state = ensure_segment(conn, path.name, 1)
        loader = SegmentLoader(
            conn, stop=threading.Event(), parser=Parser(1, crashing_scan), batch_trades=15
        )
        with pytest.raises(Crash):
            loader.load(path, state)
    seg = segments(db)[path.name]
    assert seg["status"] == "loading"
    assert seg["offset_bytes"] in frame_offsets(path)
    assert seg["trades"] == sum(db_trades(db).values()) == 20  # two frames of 10 committed
    run_once(db, wal_dir)
    assert db_trades(db) == expected_trades([path])


def test_run_keeps_identical_trades(db: str, wal_dir: Path) -> None:
    text = json.dumps(trade_event(3))
    write_segment(wal_dir, 0, [[frame(10**18 * 2, 0, 0, text), frame(10**18 * 2, 0, 0, text)]])
    run_once(db, wal_dir)
    assert list(db_trades(db).values()) == [2]


def test_invalid_trades_are_counted_logged_and_do_not_stop_the_segment(
    db: str, wal_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = [frame(2 * 10**18, 0, i, json.dumps(trade_event(i, price="2"))) for i in range(8)]
    write_segment(wal_dir, 0, [[trade_frame(1), *bad, trade_frame(2)]])
    with caplog.at_level(logging.WARNING):
        run_once(db, wal_dir)
    seg = next(iter(segments(db).values()))
    assert (seg["status"], seg["trades"], seg["parse_errors"]) == ("loaded", 2, 8)
    logged = [r.getMessage() for r in caplog.records if "invalid trade" in r.getMessage()]
    assert len(logged) == 5  # the first few only
    assert seg["name"] in logged[0] and "byte offset 0" in logged[0]


def corrupt_frame(path: Path, index: int) -> int:
    """Flip a byte inside zstd frame ``index``; return that frame's offset."""
    offsets = frame_offsets(path)
    data = bytearray(path.read_bytes())
    data[offsets[index] + 20] ^= 0xFF
    path.write_bytes(bytes(data))
    return offsets[index]


def test_a_corrupt_segment_among_good_ones(db: str, wal_dir: Path) -> None:
    make_wal(wal_dir, n_segments=3, batches=5)
    middle = sealed(wal_dir)[1]
    damaged_at = corrupt_frame(middle, 3)
    report = run_once(db, wal_dir)
    assert [o.name for o in report.corrupt] == [middle.name]
    assert len(report.loaded) == 2
    seg = segments(db)[middle.name]
    assert (seg["status"], seg["error_offset"], seg["offset_bytes"]) == (
        "corrupt",
        damaged_at,
        damaged_at,
    )
    assert "checksum" in seg["error"] or "decompress" in seg["error"]
    assert seg["trades"] == 30  # the three intact frames before the damage
    with psycopg.connect(db) as conn:
        per_segment = dict(
            conn.execute("SELECT segment_id, count(*) FROM trades GROUP BY 1").fetchall()
        )
    assert sorted(per_segment.values()) == [30, 50, 50]
    assert run_once(db, wal_dir).corrupt == []  # marked once, not re-read


def test_a_segment_without_its_seal_is_corrupt_after_loading_all_its_frames(
    db: str, wal_dir: Path
) -> None:
    path = write_segment(wal_dir, 0, [[trade_frame(i)] for i in range(4)])
    offsets = frame_offsets(path)
    path.write_bytes(path.read_bytes()[: offsets[-1]])  # drop the frame with the seal
    report = run_once(db, wal_dir)
    assert len(report.corrupt) == 1 and "seal" in (report.corrupt[0].error or "")
    assert sum(db_trades(db).values()) == 3


def test_a_second_runner_on_the_same_database_is_refused(db: str, wal_dir: Path) -> None:
    first = Runner(db, wal_dir, stop=threading.Event())
    second = Runner(db, wal_dir, stop=threading.Event())
    try:
        first.run(once=True)
        with pytest.raises(LoaderBusyError, match="only one"):
            second.run(once=True)
    finally:
        first.close()
        second.close()


def test_stop_commits_the_pending_work_and_resumes_later(db: str, wal_dir: Path) -> None:
    make_wal(wal_dir, n_segments=2)
    stop = threading.Event()
    stop.set()
    with psycopg.connect(db) as conn:
        path = sealed(wal_dir)[0]
        state = ensure_segment(conn, path.name, 1)
        outcome = SegmentLoader(conn, stop=stop).load(path, state)
    assert outcome.status == "stopped" and outcome.trades == 10
    run_once(db, wal_dir)
    assert db_trades(db) == expected_trades(sealed(wal_dir))
