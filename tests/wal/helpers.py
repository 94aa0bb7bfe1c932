"""Helpers for WAL tests: write a segment from records, list what a directory holds."""

from __future__ import annotations

from pathlib import Path

from wal import Policy, WalWriter, records
from wal.reader import SegmentReader

FAST = Policy(flush_ms=1, batch_bytes=64 << 10, rotate_s=3600)


def write_segment(directory: Path, recs: list[dict], policy: Policy = FAST) -> Path:
    """Write ``recs`` with a real writer, close it, return the one sealed segment."""
    writer = WalWriter.open(directory, policy)
    for record in recs:
        assert writer.append(record) > 0
    assert writer.close(timeout=30)
    sealed = sorted(directory.glob("*.jsonl.zst"))
    assert len(sealed) == 1, sealed
    return sealed[0]


def read_all(path: Path) -> list[dict]:
    return [record for _, record in SegmentReader(path).records()]


def frames_in(directory: Path) -> list[dict]:
    """Every frame record of every segment in the directory, in order."""
    out = []
    for path in sorted(directory.glob("*.jsonl.zst")):
        out.extend(r for r in read_all(path) if r["type"] == "frame")
    return out


def sample_frames(count: int, conn: int = 0) -> list[dict]:
    return [
        records.frame(1_700_000_000_000_000_000 + i, conn, i, f'{{"i":{i}}}') for i in range(count)
    ]
