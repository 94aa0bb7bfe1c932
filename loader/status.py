"""``loader status``: what is loaded, what is waiting, what is broken. Read-only."""

from __future__ import annotations

import calendar
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from loader.parse import PARSER_VERSION
from wal import list_sealed, parse_name

STATUSES = ("loading", "loaded", "corrupt")


@dataclass
class Status:
    """The report; ``to_dict`` is the ``--json`` form."""

    parser_version: int
    segments: dict[str, int]  # by status, plus "pending" (on disk, not yet seen)
    backlog_segments: int
    backlog_bytes: int
    oldest_unloaded_age_s: float | None
    frames: int
    trades: int
    parse_errors: int
    stale_segments: int
    corrupt: list[dict[str, Any]] = field(default_factory=list)
    # The TimescaleDB setup (loader.schema.setup_summary); filled by the CLI.
    database: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def collect(conn: psycopg.Connection, wal_dir: Path, now: float | None = None) -> Status:
    """Combine the ``wal_segments`` table with the sealed files in ``wal_dir``."""
    now = time.time() if now is None else now
    rows = conn.execute(
        "SELECT name, status, offset_bytes, frames, trades, parse_errors, parser_version,"
        " error, error_offset FROM wal_segments ORDER BY name"
    ).fetchall()
    conn.commit()
    known = {row[0]: row for row in rows}
    counts = dict.fromkeys(STATUSES, 0) | {"pending": 0}
    for row in rows:
        counts[row[1]] += 1
    backlog, backlog_bytes, oldest = 0, 0, None
    on_disk = list_sealed(wal_dir)
    for path in on_disk:
        seen = known.get(path.name)
        if seen is not None and seen[1] != "loading":
            continue
        if seen is None:
            counts["pending"] += 1
        backlog += 1
        backlog_bytes += max(path.stat().st_size - (seen[2] if seen else 0), 0)
        oldest = _age(path.name, now) if oldest is None else oldest
    return Status(
        parser_version=PARSER_VERSION,
        segments=counts,
        backlog_segments=backlog,
        backlog_bytes=backlog_bytes,
        oldest_unloaded_age_s=oldest,
        frames=sum(row[3] for row in rows),
        trades=sum(row[4] for row in rows),
        parse_errors=sum(row[5] for row in rows),
        stale_segments=sum(1 for row in rows if row[6] < PARSER_VERSION),
        corrupt=_corrupt_entries(
            [(row[0], row[8], row[7]) for row in rows if row[1] == "corrupt"], on_disk
        ),
    )


def corrupt_segments(conn: psycopg.Connection, wal_dir: Path) -> list[dict[str, Any]]:
    """Every segment marked ``corrupt``, in name order, as ``status`` lists them.

    Each is ``{"name", "offset", "error", "in_wal_dir"}``; ``in_wal_dir`` says its sealed
    file is still in ``wal_dir``: those need an operator (restore the file from a backup,
    then ``loader reparse --segment NAME``), and ``run --once`` fails while any remain.
    """
    rows = conn.execute(
        "SELECT name, error_offset, error FROM wal_segments WHERE status = 'corrupt' ORDER BY name"
    ).fetchall()
    conn.commit()
    return _corrupt_entries(rows, list_sealed(wal_dir))


def _corrupt_entries(
    rows: list[tuple[str, int | None, str | None]], on_disk: list[Path]
) -> list[dict[str, Any]]:
    names = {path.name for path in on_disk}
    return [
        {"name": name, "offset": offset, "error": error, "in_wal_dir": name in names}
        for name, offset, error in rows
    ]


def describe_corrupt(corrupt: list[dict[str, Any]], wal_dir: Path) -> str:
    """One line for the operator: which segments, where and why, and what to do."""
    details = "; ".join(f"{c['name']} at byte {c['offset']}: {c['error']}" for c in corrupt)
    return (
        f"{len(corrupt)} corrupt segment(s) in {wal_dir}, loaded up to the damage: {details}. "
        + REMEDY.format(wal_dir=wal_dir)
    )


REMEDY = (
    "Restore each from a backup into {wal_dir}, then run "
    "`loader reparse --wal-dir {wal_dir} --segment NAME` (`loader status` lists them)"
)


def render(status: Status, wal_dir: Path | str = "DIR") -> str:
    """The human form."""
    seg = status.segments
    age = status.oldest_unloaded_age_s
    lines = [
        f"parser version   {status.parser_version}"
        + (
            f" ({status.stale_segments} segments loaded by an older one: reparse --stale)"
            if status.stale_segments
            else ""
        ),
        f"segments         {seg['loaded']} loaded, {seg['loading']} loading, "
        f"{seg['pending']} pending, {seg['corrupt']} corrupt",
        f"backlog          {status.backlog_segments} segments, {status.backlog_bytes} bytes"
        + (f", oldest opened {age:.0f} s ago" if age is not None else ""),
        f"totals           {status.frames} frames, {status.trades} trades, "
        f"{status.parse_errors} parse errors",
    ]
    if status.database:
        lines.append(f"database         {status.database['summary']}")
    for item in status.corrupt:
        lines.append(
            f"corrupt          {item['name']} at byte {item['offset']}: {item['error']}"
            + ("" if item["in_wal_dir"] else " (file no longer in the WAL directory)")
        )
    if any(item["in_wal_dir"] for item in status.corrupt):
        lines.append("                 " + REMEDY.format(wal_dir=wal_dir))
    return "\n".join(lines)


def _age(name: str, now: float) -> float | None:
    parsed = parse_name(name)
    if parsed is None:
        return None
    opened = calendar.timegm(time.strptime(parsed.stamp, "%Y%m%dT%H%M%SZ"))
    return max(now - opened, 0.0)


def prunable(
    conn: psycopg.Connection,
    wal_dir: Path,
    older_than_s: float,
    now: float | None = None,
    backup: Path | None = None,
) -> list[Path]:
    """Sealed segments in ``wal_dir`` that may be deleted: ``loaded`` by the current parser
    version (a stale one may still need ``reparse``) and opened more than ``older_than_s``
    ago. Corrupt, loading and unseen segments are never listed. With ``backup``, only
    segments with a byte-identical copy ``backup/NAME`` (see ``is_backed_up``)."""
    now = time.time() if now is None else now
    loaded = {
        name
        for (name,) in conn.execute(
            "SELECT name FROM wal_segments WHERE status = 'loaded' AND parser_version = %s",
            (PARSER_VERSION,),
        )
    }
    conn.commit()
    out = []
    for path in list_sealed(wal_dir):
        age = _age(path.name, now)
        old = path.name in loaded and age is not None and age > older_than_s
        if old and (backup is None or is_backed_up(path, backup / path.name)):
            out.append(path)
    return out


def is_backed_up(path: Path, copy: Path) -> bool:
    """``copy`` is a separate regular file with exactly the bytes of ``path``.

    Compared in full (not by size or mtime), so a partial or failed copy never counts.
    A copy that is ``path`` itself (a symlink to it, a hard link, or the backup directory
    being the WAL directory) is no backup: deleting ``path`` would lose the data too.
    A copy that cannot be read counts as missing.
    """
    try:
        if not copy.is_file() or copy.samefile(path):
            return False
        if copy.stat().st_size != path.stat().st_size:
            return False
        with path.open("rb") as original, copy.open("rb") as other:
            while True:
                a, b = original.read(_CHUNK), other.read(_CHUNK)
                if a != b:
                    return False
                if not a:
                    return True
    except OSError:
        return False


_CHUNK = 1 << 20
