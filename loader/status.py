"""``loader status``: what is loaded, what is waiting, what is broken. Read-only."""

from __future__ import annotations

import calendar
import math
import os
import time
from collections.abc import Container
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from loader.parse import PARSER_VERSION
from wal import list_sealed, parse_name
from wal.naming import SEALED_SUFFIX

STATUSES = ("loading", "loaded", "corrupt", "unreadable")


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
    unreadable: list[dict[str, Any]] = field(default_factory=list)
    # Segments still ``loading`` whose file is gone from the WAL directory.
    missing: list[dict[str, Any]] = field(default_factory=list)
    # Order-book rows loaded (--books), invalid book events, and segments whose book rows
    # are not all loaded (a `loader run --books` backfills them).
    books: dict[str, int] = field(default_factory=dict)
    # The TimescaleDB setup (loader.schema.setup_summary); filled by the CLI.
    database: dict[str, Any] = field(default_factory=dict)
    # Gaps of the last 24 h (loader.carry.summary); filled by the CLI.
    gaps_24h: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Totals by status in one pass over the table, with no row leaving the server.
_TOTALS_SQL = """
SELECT status, count(*), coalesce(sum(frames), 0), coalesce(sum(trades), 0),
       coalesce(sum(parse_errors), 0), count(*) FILTER (WHERE parser_version < %s),
       coalesce(sum(book_rows), 0), coalesce(sum(book_errors), 0),
       count(*) FILTER (WHERE status <> 'loading' AND books_offset < offset_bytes)
  FROM wal_segments GROUP BY status"""
# The rows still to do or broken: few, found through the partial index of migration 2.
_UNFINISHED_SQL = """
SELECT name, status, offset_bytes, error, error_offset, error_at, retry_at, tries
  FROM wal_segments WHERE status <> 'loaded' ORDER BY name"""
# Which names the table knows in the range of those on disk: one index range scan (an
# anti-join against an array of every name on disk costs several times more).
_KNOWN_IN_RANGE_SQL = "SELECT name FROM wal_segments WHERE name BETWEEN %s AND %s"


def collect(conn: psycopg.Connection, wal_dir: Path, now: float | None = None) -> Status:
    """Combine the ``wal_segments`` table with the sealed files in ``wal_dir``.

    Its cost grows with the files in ``wal_dir`` and the unfinished rows, not with the
    history of loaded segments (their totals are summed by the server).
    """
    now = time.time() if now is None else now
    counts = dict.fromkeys(STATUSES, 0) | {"pending": 0}
    frames = trades = parse_errors = stale = 0
    books = dict.fromkeys(("rows", "errors", "segments_behind"), 0)
    for state, n, f, t, e, old, br, be, bb in conn.execute(
        _TOTALS_SQL, (PARSER_VERSION,)
    ).fetchall():
        counts[state] = n
        frames, trades, parse_errors, stale = frames + f, trades + t, parse_errors + e, stale + old
        books["rows"] += int(br)
        books["errors"] += int(be)
        books["segments_behind"] += int(bb)
    unfinished = {row[0]: row for row in conn.execute(_UNFINISHED_SQL).fetchall()}
    candidates = sorted(n for n in os.listdir(wal_dir) if n.endswith(SEALED_SUFFIX))
    known: set[str] = set()
    if candidates:
        rows = conn.execute(_KNOWN_IN_RANGE_SQL, (candidates[0], candidates[-1])).fetchall()
        known = {row[0] for row in rows}
    conn.commit()
    # Names the table knows are segment names; only the others need checking.
    names = [n for n in candidates if n in known or parse_name(n) is not None]
    on_disk = set(names)
    unknown = on_disk - known
    counts["pending"] = len(unknown)
    backlog, backlog_bytes, oldest = 0, 0, None
    for name in names:  # in sequence order
        seen = unfinished.get(name)
        if name not in unknown and (seen is None or seen[1] == "corrupt"):
            continue
        backlog += 1
        backlog_bytes += max(_size(wal_dir / name) - (seen[2] if seen else 0), 0)
        oldest = _age(name, now) if oldest is None else oldest
    rows = list(unfinished.values())
    return Status(
        parser_version=PARSER_VERSION,
        segments=counts,
        backlog_segments=backlog,
        backlog_bytes=backlog_bytes,
        oldest_unloaded_age_s=oldest,
        frames=int(frames),
        trades=int(trades),
        parse_errors=int(parse_errors),
        stale_segments=int(stale),
        books=books,
        corrupt=_corrupt_entries([(r[0], r[4], r[3]) for r in rows if r[1] == "corrupt"], on_disk),
        unreadable=_unreadable_entries([r for r in rows if r[1] == "unreadable"], on_disk),
        missing=[
            {"name": r[0], "offset": r[2]}
            for r in rows
            if r[1] == "loading" and r[0] not in on_disk
        ],
    )


def corrupt_segments(
    conn: psycopg.Connection, wal_dir: Path, on_disk: Container[str] | None = None
) -> list[dict[str, Any]]:
    """Every segment marked ``corrupt``, in name order, as ``status`` lists them.

    Each is ``{"name", "offset", "error", "in_wal_dir"}``; ``in_wal_dir`` says its sealed
    file is still in ``wal_dir`` (``on_disk``: its sealed names, when already listed):
    those need an operator (restore the file from a backup, then ``loader reparse
    --segment NAME``), and ``run --once`` fails while any remain.
    """
    rows = conn.execute(
        "SELECT name, error_offset, error FROM wal_segments WHERE status = 'corrupt' ORDER BY name"
    ).fetchall()
    conn.commit()
    return _corrupt_entries(rows, _names(wal_dir) if on_disk is None else on_disk)


def unreadable_segments(
    conn: psycopg.Connection, wal_dir: Path, on_disk: Container[str] | None = None
) -> list[dict[str, Any]]:
    """Every segment marked ``unreadable``, in name order, as ``status`` lists them.

    Each is ``{"name", "offset", "error", "tries", "last_tried_at", "retry_at",
    "in_wal_dir"}`` (times as ISO 8601 strings); ``run`` retries those in ``wal_dir``.
    """
    rows = conn.execute(
        "SELECT name, status, offset_bytes, error, error_offset, error_at, retry_at, tries"
        " FROM wal_segments WHERE status = 'unreadable' ORDER BY name"
    ).fetchall()
    conn.commit()
    return _unreadable_entries(rows, _names(wal_dir) if on_disk is None else on_disk)


def _names(wal_dir: Path) -> set[str]:
    return set(sealed_names(wal_dir))


def sealed_names(wal_dir: Path, known: Container[str] = ()) -> list[str]:
    """Names of the sealed segments in ``wal_dir``, in sequence order.

    Like ``wal.list_sealed`` but names only, and the name check is skipped for the names
    in ``known`` (already checked): listing 20,000 segments stays a few milliseconds.
    """
    names = [
        name
        for name in os.listdir(wal_dir)
        if name.endswith(SEALED_SUFFIX) and (name in known or parse_name(name) is not None)
    ]
    names.sort()  # zero-padded sequence numbers: name order is sequence order
    return names


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # vanished or unreadable since the listing: nothing to count


def _corrupt_entries(
    rows: list[tuple[str, int | None, str | None]], on_disk: Container[str]
) -> list[dict[str, Any]]:
    return [
        {"name": name, "offset": offset, "error": error, "in_wal_dir": name in on_disk}
        for name, offset, error in rows
    ]


def _unreadable_entries(
    rows: list[tuple[Any, ...]], on_disk: Container[str]
) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "offset": offset,
            "error": error,
            "tries": tries,
            "last_tried_at": _iso(error_at),
            "retry_at": _iso(retry_at),
            "in_wal_dir": name in on_disk,
        }
        for name, _status, offset, error, _error_offset, error_at, retry_at, tries in rows
    ]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


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


UNREADABLE_REMEDY = (
    "Make each file readable by the loader's user (permissions, disk, mount): `loader run` "
    "retries it by itself and loads it from its committed offset"
)


def describe_unreadable(unreadable: list[dict[str, Any]], wal_dir: Path) -> str:
    """One line for the operator: which segments cannot be read, why, and what to do."""
    details = "; ".join(f"{u['name']}: {u['error']}" for u in unreadable)
    return f"{len(unreadable)} unreadable segment(s) in {wal_dir}: {details}. " + UNREADABLE_REMEDY


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
        f"{seg['pending']} pending, {seg['corrupt']} corrupt, {seg['unreadable']} unreadable",
        f"backlog          {status.backlog_segments} segments, {status.backlog_bytes} bytes"
        + (f", oldest opened {age:.0f} s ago" if age is not None else ""),
        f"totals           {status.frames} frames, {status.trades} trades, "
        f"{status.parse_errors} parse errors",
    ]
    if status.books.get("rows"):
        lines.append(
            f"books            {status.books['rows']} rows, {status.books['errors']} invalid "
            f"events, {status.books['segments_behind']} segments behind"
            + (" (`loader run --books` backfills them)" if status.books["segments_behind"] else "")
        )
    if status.database:
        lines.append(f"database         {status.database['summary']}")
    if status.gaps_24h:
        lines.append(_gap_line(status.gaps_24h))
    for item in status.corrupt:
        lines.append(
            f"corrupt          {item['name']} at byte {item['offset']}: {item['error']}"
            + ("" if item["in_wal_dir"] else " (file no longer in the WAL directory)")
        )
    if any(item["in_wal_dir"] for item in status.corrupt):
        lines.append("                 " + REMEDY.format(wal_dir=wal_dir))
    for item in status.missing:
        lines.append(
            f"missing          {item['name']}: loading, up to byte {item['offset']}, but its "
            "file is no longer in the WAL directory"
        )
    for item in status.unreadable:
        lines.append(
            f"unreadable       {item['name']} from byte {item['offset']}: {item['error']} "
            f"({item['tries']} tries, last {item['last_tried_at']}"
            + (
                f", next {item['retry_at']})"
                if item["in_wal_dir"]
                else "; file no longer in the WAL directory)"
            )
        )
    if any(item["in_wal_dir"] for item in status.unreadable):
        lines.append("                 " + UNREADABLE_REMEDY)
    return "\n".join(lines)


SHOWN_COVERAGE = 5  # assets listed by coverage in the text form; --json has them all


def _gap_line(gaps: dict[str, Any]) -> str:
    count = gaps["count"]
    line = f"gaps (24 h)      {count} gap{'' if count == 1 else 's'}, {gaps['seconds']:.1f} s"
    worst = sorted(gaps["coverage"].items(), key=lambda item: (item[1], item[0]))
    if worst:
        shown = ", ".join(f"{token} {_share(share)}" for token, share in worst[:SHOWN_COVERAGE])
        more = len(worst) - SHOWN_COVERAGE
        line += f"; covered: {shown}" + (f" (+{more} more below 100%)" if more > 0 else "")
        line += "; every other asset 100%"
    return line


def _share(share: float) -> str:
    """A covered share, rounded down: one below 100% never shows as 100.00%."""
    return f"{math.floor(share * 10_000) / 100:.2f}%"


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
