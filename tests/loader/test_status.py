"""``loader status``: human and JSON forms agree with the WAL directory and the table."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psycopg
from click.testing import CliRunner

from loader.cli import main as cli
from loader.parse import PARSER_VERSION
from loader.status import collect, render
from tests.loader.conftest import run_loader
from tests.loader.helpers import BASE_NS, frame_offsets, trade_event, trade_frame, write_segment
from wal.records import frame


def make_state(wal_dir: Path, db: str) -> list[Path]:
    """Two loaded segments (one with an invalid trade), one corrupt, two pending."""
    bad = frame(BASE_NS, 0, 9, json.dumps(trade_event(9, side="HOLD")))
    paths = [
        write_segment(wal_dir, 0, [[trade_frame(1), trade_frame(2)]]),
        write_segment(wal_dir, 1, [[trade_frame(3), bad]]),
        write_segment(wal_dir, 2, [[trade_frame(4)], [trade_frame(5)]]),
    ]
    offset = frame_offsets(paths[2])[1]
    data = bytearray(paths[2].read_bytes())
    data[offset + 20] ^= 0xFF
    paths[2].write_bytes(bytes(data))
    assert run_loader(db, "run", "--wal-dir", str(wal_dir), "--once").returncode == 1
    paths.append(write_segment(wal_dir, 3, [[trade_frame(6)]]))
    paths.append(write_segment(wal_dir, 4, [[trade_frame(7)]]))
    return paths


def test_status_json_reports_segments_backlog_totals_and_corruption(db: str, wal_dir: Path) -> None:
    paths = make_state(wal_dir, db)
    done = run_loader(db, "status", "--wal-dir", str(wal_dir), "--json")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["segments"] == {
        "loaded": 2,
        "loading": 0,
        "corrupt": 1,
        "unreadable": 0,
        "pending": 2,
    }
    assert status["backlog_segments"] == 2
    assert status["backlog_bytes"] == paths[3].stat().st_size + paths[4].stat().st_size
    assert status["oldest_unloaded_age_s"] > 0
    assert (status["frames"], status["trades"], status["parse_errors"]) == (5, 4, 1)
    assert status["parser_version"] == PARSER_VERSION and status["stale_segments"] == 0
    [corrupt] = status["corrupt"]
    assert corrupt["name"] == paths[2].name
    assert corrupt["offset"] == frame_offsets_before_damage(paths[2])
    assert "checksum" in corrupt["error"] or "decompress" in corrupt["error"]
    assert corrupt["in_wal_dir"] is True


def frame_offsets_before_damage(path: Path) -> int:
    from wal import SegmentReader

    reader = SegmentReader(path, tolerate_torn_tail=True)
    list(reader.batches())
    return reader.valid_end


def test_status_human_form_says_the_same(db: str, wal_dir: Path) -> None:
    paths = make_state(wal_dir, db)
    done = run_loader(db, "status", "--wal-dir", str(wal_dir))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"parser version   {PARSER_VERSION}" in out
    assert "2 loaded, 0 loading, 2 pending, 1 corrupt" in out
    assert "backlog          2 segments" in out
    assert "5 frames, 4 trades, 1 parse errors" in out
    assert f"corrupt          {paths[2].name} at byte" in out
    assert f"then run `loader reparse --wal-dir {wal_dir} --segment NAME`" in out


def test_status_counts_a_partly_loaded_segment_in_the_backlog(db: str, wal_dir: Path) -> None:
    path = write_segment(wal_dir, 0, [[trade_frame(1)], [trade_frame(2)]])
    with psycopg.connect(db) as conn:
        conn.execute(
            "INSERT INTO wal_segments (name, parser_version, offset_bytes) VALUES (%s, 1, 40)",
            (path.name,),
        )
        conn.commit()
        status = collect(conn, wal_dir, now=time.time())
    assert status.segments["loading"] == 1 and status.backlog_segments == 1
    assert status.backlog_bytes == path.stat().st_size - 40
    assert "1 loading" in render(status)


def test_status_without_schema_says_to_run_init_db(fresh_db: str, wal_dir: Path) -> None:
    done = run_loader(fresh_db, "status", "--wal-dir", str(wal_dir))
    assert done.returncode == 1 and "loader init-db" in done.stderr


def test_prunable_lists_only_old_segments_loaded_by_the_current_parser(db, wal_dir):
    for seq in range(3):
        write_segment(wal_dir, seq, [[trade_frame(seq)]])
    runner = CliRunner()
    assert (
        runner.invoke(cli, ["run", "--dsn", db, "--wal-dir", str(wal_dir), "--once"]).exit_code == 0
    )
    names = sorted(p.name for p in wal_dir.glob("*.jsonl.zst"))
    with psycopg.connect(db) as conn:
        conn.execute("UPDATE wal_segments SET parser_version = 0 WHERE name = %s", (names[1],))
        conn.execute("UPDATE wal_segments SET status = 'corrupt' WHERE name = %s", (names[2],))
    write_segment(wal_dir, 3, [[trade_frame(9)]])  # sealed, never loaded
    result = runner.invoke(
        cli, ["prunable", "--dsn", db, "--wal-dir", str(wal_dir), "--older-than", "0h"]
    )
    assert result.exit_code == 0, result.output
    assert [Path(p).name for p in result.output.split()] == [names[0]]
    ancient = ["prunable", "--dsn", db, "--wal-dir", str(wal_dir), "--older-than", "36500d"]
    assert runner.invoke(cli, ancient).output == ""  # nothing is a century old


def test_prunable_with_backup_lists_only_segments_with_an_identical_copy(
    db: str, wal_dir: Path, tmp_path: Path
) -> None:
    paths = [write_segment(wal_dir, seq, [[trade_frame(seq)]]) for seq in range(6)]
    runner = CliRunner()
    run = ["run", "--dsn", db, "--wal-dir", str(wal_dir), "--once"]
    assert runner.invoke(cli, run).exit_code == 0
    stale = write_segment(wal_dir, 6, [[trade_frame(6)]])  # sealed, never loaded
    backup = tmp_path / "backup"
    backup.mkdir()
    missing, differing, partial, identical, symlinked, hardlinked = paths
    data = differing.read_bytes()
    (backup / differing.name).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size
    (backup / partial.name).write_bytes(partial.read_bytes()[:-10])  # an interrupted copy
    (backup / identical.name).write_bytes(identical.read_bytes())
    (backup / symlinked.name).symlink_to(symlinked)  # the original itself: no backup
    (backup / hardlinked.name).hardlink_to(hardlinked)  # the same inode: no backup
    (backup / stale.name).write_bytes(stale.read_bytes())  # backed up but never loaded
    (backup / "unrelated.jsonl.zst").write_bytes(b"x")
    base = ["prunable", "--dsn", db, "--wal-dir", str(wal_dir), "--older-than", "0h"]
    result = runner.invoke(cli, [*base, "--backup", str(backup)])
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(identical)]
    assert missing.name not in result.stdout
    # Without --backup the rules are unchanged: every loaded, old, sealed segment.
    assert runner.invoke(cli, base).stdout.split() == [str(p) for p in paths]
    # The WAL directory is no backup of itself; a missing backup directory is an error.
    for bad in (wal_dir, tmp_path / "not-mounted"):
        refused = runner.invoke(cli, [*base, "--backup", str(bad)])
        assert refused.exit_code == 2 and refused.stdout == "", refused.output
