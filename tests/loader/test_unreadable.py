"""Segments whose file cannot be read: recorded, reported, retried; the rest loads.

We run as root, so permissions do not stop a read: a real OSError comes from a
directory or a dangling symlink where the segment file should be.
"""

from __future__ import annotations

import json
import shutil
import signal
import threading
from pathlib import Path

import psycopg

from loader.load import CURRENT_PARSER, Parser, SegmentLoader
from loader.runner import Runner
from loader.store import ensure_segment
from tests.loader.conftest import db_trades, expected_trades, run_loader, segments
from tests.loader.helpers import trade_frame, write_segment
from tests.loader.test_runner import start_run, wait_until
from tests.timeouts import TIMEOUT_S


def make_unreadable(path: Path, keep: Path) -> None:
    """Move the segment to ``keep`` and leave a directory of its name in its place."""
    shutil.move(path, keep)
    path.mkdir()


def restore(path: Path, keep: Path) -> None:
    path.rmdir()
    shutil.move(keep, path)


def test_run_once_loads_around_an_unreadable_segment_and_reports_it(
    db: str, wal_dir: Path, tmp_path: Path
) -> None:
    paths = [write_segment(wal_dir, seq, [[trade_frame(seq)]]) for seq in range(3)]
    expected = expected_trades(paths)
    keep = tmp_path / "kept"
    make_unreadable(paths[0], keep)
    done = run_loader(db, "run", "--wal-dir", str(wal_dir), "--once")
    assert done.returncode == 1, done.stderr
    assert "1 unreadable segment(s)" in done.stderr and paths[0].name in done.stderr
    assert "Is a directory" in done.stderr and "Traceback" not in done.stderr
    rows = segments(db)
    assert [rows[p.name]["status"] for p in paths] == ["unreadable", "loaded", "loaded"]
    assert rows[paths[0].name]["tries"] == 1 and rows[paths[0].name]["error_at"] is not None
    assert rows[paths[0].name]["retry_at"] > rows[paths[0].name]["error_at"]

    status = json.loads(run_loader(db, "status", "--wal-dir", str(wal_dir), "--json").stdout)
    assert status["segments"]["unreadable"] == 1
    [entry] = status["unreadable"]
    assert entry["name"] == paths[0].name and entry["in_wal_dir"] is True
    assert "Is a directory" in entry["error"] and entry["tries"] == 1
    text = run_loader(db, "status", "--wal-dir", str(wal_dir)).stdout
    assert f"unreadable       {paths[0].name} from byte 0: " in text

    restore(paths[0], keep)
    again = run_loader(db, "run", "--wal-dir", str(wal_dir), "--once")
    assert again.returncode == 0, again.stderr
    row = segments(db)[paths[0].name]
    assert (row["status"], row["tries"], row["error"]) == ("loaded", 0, None)
    assert db_trades(db) == expected


def test_a_partly_loaded_segment_that_turns_unreadable_resumes_at_its_offset(
    db: str, wal_dir: Path, tmp_path: Path
) -> None:
    path = write_segment(wal_dir, 0, [[trade_frame(i)] for i in range(4)])
    expected = expected_trades([path])
    stopped = threading.Event()
    stopped.set()  # a loader told to stop commits one zstd frame, then returns
    with psycopg.connect(db) as conn:
        SegmentLoader(conn, stop=stopped).load(path, ensure_segment(conn, path.name, 1))
    offset = segments(db)[path.name]["offset_bytes"]
    assert offset > 0 and sum(db_trades(db).values()) == 1
    keep = tmp_path / "kept"
    shutil.move(path, keep)
    path.symlink_to(tmp_path / "nowhere")  # dangling: open() raises FileNotFoundError
    assert run_loader(db, "run", "--wal-dir", str(wal_dir), "--once").returncode == 1
    row = segments(db)[path.name]
    assert (row["status"], row["offset_bytes"]) == ("unreadable", offset)
    path.unlink()
    shutil.move(keep, path)
    assert run_loader(db, "run", "--wal-dir", str(wal_dir), "--once").returncode == 0
    assert db_trades(db) == expected  # every trade exactly once


def test_a_running_loader_retries_an_unreadable_segment_with_backoff(
    db: str, wal_dir: Path, tmp_path: Path
) -> None:
    bad = write_segment(wal_dir, 0, [[trade_frame(0)]])
    keep = tmp_path / "kept"
    make_unreadable(bad, keep)
    write_segment(wal_dir, 1, [[trade_frame(1)]])
    child = start_run(db, wal_dir, "--unreadable-retry-seconds", "0.2")
    try:
        wait_until(lambda: segments(db).get(bad.name, {}).get("tries", 0) >= 2, "two tries")
        assert sum(db_trades(db).values()) == 1  # the readable one loaded meanwhile
        write_segment(wal_dir, 2, [[trade_frame(2)]])  # and new ones still load
        wait_until(lambda: sum(db_trades(db).values()) == 2, "the new segment")
        restore(bad, keep)
        wait_until(lambda: segments(db)[bad.name]["status"] == "loaded", "the restored one")
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=TIMEOUT_S)
    finally:
        child.kill()
    assert child.returncode == 0, stderr
    assert f"segment {bad.name} cannot be read" in stderr and "tried again in" in stderr
    assert db_trades(db) == expected_trades(sorted(wal_dir.glob("*.zst")))


def test_a_segment_vanishing_between_listing_and_reading_is_reported_not_fatal(
    db: str, wal_dir: Path
) -> None:
    paths = [write_segment(wal_dir, seq, [[trade_frame(seq)]]) for seq in range(3)]

    def scan_and_prune(*args: object, **kwargs: object) -> object:
        paths[1].unlink(missing_ok=True)  # someone deletes the next segment meanwhile
        return CURRENT_PARSER.scan(*args, **kwargs)

    runner = Runner(db, wal_dir, stop=threading.Event(), parser=Parser(scan=scan_and_prune))
    try:
        report = runner.run(once=True)
    finally:
        runner.close()
    assert report.loaded == [paths[0].name, paths[2].name]
    assert [o.name for o in report.failed] == [paths[1].name]
    assert report.still_unreadable == []  # gone from the WAL directory: nothing to retry
    row = segments(db)[paths[1].name]
    assert row["status"] == "unreadable" and "No such file" in row["error"]
    status = json.loads(run_loader(db, "status", "--wal-dir", str(wal_dir), "--json").stdout)
    assert [(u["name"], u["in_wal_dir"]) for u in status["unreadable"]] == [(paths[1].name, False)]


def test_reparse_of_an_unreadable_segment_fails_it_and_reparses_the_others(
    db: str, wal_dir: Path, tmp_path: Path
) -> None:
    paths = [write_segment(wal_dir, seq, [[trade_frame(seq)]]) for seq in range(3)]
    assert run_loader(db, "run", "--wal-dir", str(wal_dir), "--once").returncode == 0
    make_unreadable(paths[1], tmp_path / "kept")
    names = [arg for p in paths for arg in ("--segment", p.name)]
    done = run_loader(db, "reparse", "--wal-dir", str(wal_dir), *names)
    assert done.returncode == 1
    assert "1 unreadable segment(s)" in done.stderr and paths[1].name in done.stderr
    assert "Is a directory" in done.stderr and "Traceback" not in done.stderr
    assert "reparsed 2 segments" in done.stderr
    assert sum(db_trades(db).values()) == 3  # the failed one keeps its rows


def test_a_partly_loaded_segment_whose_file_vanished_is_reported_not_fatal(
    db: str, wal_dir: Path
) -> None:
    gone = write_segment(wal_dir, 0, [[trade_frame(i)] for i in range(3)])
    stopped = threading.Event()
    stopped.set()
    with psycopg.connect(db) as conn:
        SegmentLoader(conn, stop=stopped).load(gone, ensure_segment(conn, gone.name, 1))
    offset = segments(db)[gone.name]["offset_bytes"]
    gone.unlink()
    write_segment(wal_dir, 1, [[trade_frame(9)]])
    done = run_loader(db, "run", "--wal-dir", str(wal_dir), "--once")
    assert done.returncode == 0, done.stderr
    status = json.loads(run_loader(db, "status", "--wal-dir", str(wal_dir), "--json").stdout)
    assert status["missing"] == [{"name": gone.name, "offset": offset}]
    text = run_loader(db, "status", "--wal-dir", str(wal_dir)).stdout
    assert f"missing          {gone.name}: loading, up to byte {offset}" in text
