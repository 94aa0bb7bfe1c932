import time
from pathlib import Path

import pytest

from capture.errors import StatusError
from capture.status import check_fresh, render

DOC = {
    "pid": 42,
    "state": "running",
    "uptime_s": 12.0,
    "assets": 3,
    "connections_up": 1,
    "frames": 100,
    "frames_per_s": 9.5,
    "interval_s": 5.0,
    "updated_ns": 0,
    "wal": {
        "dropped_total": 0,
        "current_segment": "000000000001-x.jsonl.zst.open",
        "segments_sealed": 1,
        "buffered_bytes": 10,
        "last_error": "ENOSPC",
        "write_errors": 2,
    },
    "connections": [
        {"id": 0, "state": "up", "assets": 2, "frames": 90, "last_frame_age_s": 0.5},
        {"id": 1, "state": "backoff", "assets": 1, "frames": 10, "last_frame_age_s": None},
    ],
}


def test_render_shows_connections_segment_rate_and_errors():
    text = render(DOC)
    assert "3 assets on 2 connections (1 up)" in text
    assert "frames/s 9.5" in text and "000000000001-x.jsonl.zst.open" in text
    assert "WAL ERROR (2 so far): ENOSPC" in text
    assert "0.5s ago" in text and "backoff" in text


def test_render_shows_each_connections_shard_and_replica():
    conns = [
        {"id": i, "shard": 1, "replica": i - 2, "state": "up", "assets": 1, "frames": 5}
        for i in (2, 3)
    ]
    text = render({**DOC, "connections": [*DOC["connections"], *conns]})
    assert "   3       1/1  up" in text  # replica 1 of shard 1
    assert "   0       0/0  up" in text  # a status file written before redundancy


def test_fresh_status_passes():
    now = time.time_ns()
    check_fresh({**DOC, "updated_ns": now - 10**9}, now, True, Path("s"))


def test_stale_status_and_dead_daemon_are_errors():
    now = time.time_ns()
    with pytest.raises(StatusError, match="has not updated"):
        check_fresh({**DOC, "updated_ns": now - 60 * 10**9}, now, True, Path("s"))
    with pytest.raises(StatusError, match="not running"):
        check_fresh({**DOC, "updated_ns": now}, now, False, Path("s"))
    with pytest.raises(StatusError, match="not running"):
        check_fresh({**DOC, "state": "stopped", "updated_ns": now}, now, True, Path("s"))


def test_a_dead_wal_writer_is_shown_and_named_when_not_running():
    doc = {**DOC, "wal": {**DOC["wal"], "fatal_error": "RuntimeError: bug"}}
    assert "WAL WRITER DIED (capture is exiting): RuntimeError: bug" in render(doc)
    with pytest.raises(StatusError, match="its WAL writer died: RuntimeError: bug"):
        check_fresh({**doc, "state": "failed"}, 0, True, Path("s.json"))
