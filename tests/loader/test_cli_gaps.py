"""``loader gaps`` and the gap lines of ``loader status``, from a real load."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.loader.conftest import run_loader
from tests.loader.helpers import opened, subscribed, write_segment
from wal.records import conn_close

S = 1_000_000_000
A, B = "1111", "2222"


def write_recent_gap(wal_dir: Path) -> int:
    """One shard, one replica: down for 600 s an hour ago. Returns when it started."""
    start = time.time_ns() - 3600 * S
    write_segment(
        wal_dir,
        0,
        [
            [opened(start - 2 * S, 0, 0, 0), subscribed(start - S, 0, [A, B])],
            [conn_close(start, 0, "u", 1006, "")],
        ],
    )
    write_segment(
        wal_dir, 1, [[opened(start + 599 * S, 0, 0, 0), subscribed(start + 600 * S, 0, [A, B])]]
    )
    return start


def test_gaps_lists_the_gap_with_its_assets_and_cause(db: str, wal_dir: Path) -> None:
    write_recent_gap(wal_dir)
    assert run_loader(db, "run", "--wal-dir", str(wal_dir), "--once").returncode == 0
    result = run_loader(db, "gaps", "--json")
    assert result.returncode == 0, result.stderr
    (gap,) = json.loads(result.stdout)
    assert (gap["token_ids"], gap["cause"], gap["shard"]) == ([A, B], "close 1006", "s0")
    text = run_loader(db, "gaps", "--token", B).stdout
    assert "600.000 s  close 1006  2 assets" in text
    assert run_loader(db, "gaps", "--token", "3333").stdout.strip() == "no gaps"


def test_status_shows_the_gaps_of_the_last_day_and_each_assets_coverage(
    db: str, wal_dir: Path
) -> None:
    write_recent_gap(wal_dir)
    assert run_loader(db, "run", "--wal-dir", str(wal_dir), "--once").returncode == 0
    result = run_loader(db, "status", "--wal-dir", str(wal_dir), "--json")
    assert result.returncode == 0, result.stderr
    gaps = json.loads(result.stdout)["gaps_24h"]
    share = round(1 - 600 / 86400, 6)
    assert gaps == {"count": 1, "seconds": 600.0, "coverage": {A: share, B: share}}
    text = run_loader(db, "status", "--wal-dir", str(wal_dir)).stdout
    assert "gaps (24 h)      1 gap, 600.0 s; covered: 1111 99.30%, 2222 99.30%" in text
