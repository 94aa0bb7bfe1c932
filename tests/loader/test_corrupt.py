"""Corrupt segments stay visible until an operator acts: ``run --once`` keeps exiting 1,
``status`` lists them with the remedy, and reparse of a restored file clears them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from loader.parse import PARSER_VERSION
from tests.loader.conftest import (
    check_counts_match_table,
    db_trades,
    expected_trades,
    run_loader,
    sealed,
    segments,
)
from tests.loader.helpers import frame_offsets, trade_frame, write_segment


def damage(path: Path, frame: int) -> int:
    """Flip a byte inside zstd frame ``frame`` of ``path``; returns that frame's offset."""
    offset = frame_offsets(path)[frame]
    data = bytearray(path.read_bytes())
    data[offset + 20] ^= 0xFF
    path.write_bytes(bytes(data))
    return offset


def write_three(wal_dir: Path) -> list[Path]:
    return [
        write_segment(wal_dir, seq, [[trade_frame(seq * 10 + i)] for i in range(3)])
        for seq in range(3)
    ]


def once(db: str, wal_dir: Path) -> tuple[int, str]:
    done = run_loader(db, "run", "--wal-dir", str(wal_dir), "--once")
    assert "Traceback" not in done.stderr
    return done.returncode, done.stderr


def test_corrupt_segment_story_from_damage_to_repair(
    db: str, wal_dir: Path, tmp_path: Path
) -> None:
    paths = write_three(wal_dir)
    backup = tmp_path / "backup"
    backup.mkdir()
    good = shutil.copy2(paths[1], backup / paths[1].name)
    expected = expected_trades(sealed(wal_dir))
    offset = damage(paths[1], 1)

    # The run that finds the damage loads around it and exits 1.
    code, stderr = once(db, wal_dir)
    assert code == 1
    assert f"1 corrupt segment(s) in {wal_dir}" in stderr
    assert f"{paths[1].name} at byte {offset}: " in stderr
    assert f"loader reparse --wal-dir {wal_dir} --segment NAME" in stderr
    assert "Restore each from a backup" in stderr
    assert sum(db_trades(db).values()) == 3 + 1 + 3

    # Every later run keeps failing, naming it, though it found nothing new.
    for _ in range(2):
        code, stderr = once(db, wal_dir)
        assert code == 1
        assert "loaded 0 segments, 0 trades" in stderr
        assert f"1 corrupt segment(s) in {wal_dir}" in stderr
        assert f"{paths[1].name} at byte {offset}: " in stderr
    assert sum(db_trades(db).values()) == 7

    # status says the same and what to do.
    status = run_loader(db, "status", "--wal-dir", str(wal_dir))
    assert status.returncode == 0, status.stderr
    assert f"corrupt          {paths[1].name} at byte {offset}: " in status.stdout
    assert f"loader reparse --wal-dir {wal_dir} --segment NAME" in status.stdout
    as_json = json.loads(run_loader(db, "status", "--wal-dir", str(wal_dir), "--json").stdout)
    [entry] = as_json["corrupt"]
    assert (entry["name"], entry["offset"], entry["in_wal_dir"]) == (paths[1].name, offset, True)

    # Reparsing the damaged file again changes nothing and still fails.
    again = run_loader(db, "reparse", "--wal-dir", str(wal_dir), "--segment", paths[1].name)
    assert again.returncode == 1 and "Restore each from a backup" in again.stderr
    assert segments(db)[paths[1].name]["status"] == "corrupt"

    # The way out: restore the good copy, reparse it.
    shutil.copy2(good, paths[1])
    fixed = run_loader(db, "reparse", "--wal-dir", str(wal_dir), "--segment", str(paths[1]))
    assert fixed.returncode == 0, fixed.stderr
    assert "reparsed 1 segments, 3 trades" in fixed.stderr
    row = segments(db)[paths[1].name]
    assert (row["status"], row["error"], row["error_offset"]) == ("loaded", None, None)
    assert row["offset_bytes"] == paths[1].stat().st_size
    assert (row["trades"], row["parser_version"]) == (3, PARSER_VERSION)
    assert db_trades(db) == expected  # each trade once
    check_counts_match_table(db)

    code, stderr = once(db, wal_dir)
    assert code == 0, stderr
    assert db_trades(db) == expected
    status = run_loader(db, "status", "--wal-dir", str(wal_dir))
    assert "3 loaded, 0 loading, 0 pending, 0 corrupt" in status.stdout
    assert "corrupt " not in status.stdout and "reparse" not in status.stdout


def test_run_once_names_every_corrupt_segment_with_offset_and_error(db: str, wal_dir: Path) -> None:
    paths = write_three(wal_dir)
    first = damage(paths[0], 2)
    code, _ = once(db, wal_dir)
    assert code == 1
    late = write_segment(wal_dir, 3, [[trade_frame(99)]])
    late.write_bytes(b"garbage" + late.read_bytes())
    # One corrupt from before, one found now: both named, on one line.
    code, stderr = once(db, wal_dir)
    assert code == 1
    [line] = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert f"2 corrupt segment(s) in {wal_dir}" in line
    assert f"{paths[0].name} at byte {first}: " in line
    assert f"{late.name} at byte 0: " in line


def test_a_corrupt_segment_whose_file_is_gone_is_listed_but_does_not_fail_run_once(
    db: str, wal_dir: Path
) -> None:
    paths = write_three(wal_dir)
    damage(paths[1], 1)
    assert once(db, wal_dir)[0] == 1
    paths[1].unlink()  # the operator gave it up: nothing left to restore and reparse
    code, stderr = once(db, wal_dir)
    assert code == 0, stderr
    status = run_loader(db, "status", "--wal-dir", str(wal_dir))
    assert f"{paths[1].name} at byte" in status.stdout
    assert "(file no longer in the WAL directory)" in status.stdout
    assert "reparse" not in status.stdout
    as_json = json.loads(run_loader(db, "status", "--wal-dir", str(wal_dir), "--json").stdout)
    assert [c["in_wal_dir"] for c in as_json["corrupt"]] == [False]
