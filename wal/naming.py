"""Segment file names: ``SSSSSSSSSSSS-YYYYMMDDTHHMMSSZ.jsonl.zst`` (+ ``.open``).

Pure functions: the time is passed in.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

SEALED_SUFFIX = ".jsonl.zst"
OPEN_SUFFIX = ".open"
LOCK_NAME = ".lock"
SEQ_NAME = ".seq"  # the next sequence number, so numbering survives pruning every segment
TORN_DIR = "torn"  # bytes cut from torn tails by recovery are kept here, never deleted
SEQ_DIGITS = 12  # sorting names sorts by sequence for 10^12 segments

_NAME_RE = re.compile(r"^(\d{12})-(\d{8}T\d{6}Z)\.jsonl\.zst(\.open)?$")


@dataclass(frozen=True, order=True)
class SegmentName:
    """A parsed segment file name."""

    seq: int
    stamp: str  # YYYYMMDDTHHMMSSZ, UTC time the segment was opened
    is_open: bool = False

    @property
    def sealed_name(self) -> str:
        return f"{self.seq:0{SEQ_DIGITS}d}-{self.stamp}{SEALED_SUFFIX}"

    @property
    def filename(self) -> str:
        return self.sealed_name + (OPEN_SUFFIX if self.is_open else "")


def make_name(seq: int, created_ns: int, *, is_open: bool = False) -> SegmentName:
    """The name of segment ``seq`` opened at ``created_ns`` (ns since the epoch, UTC)."""
    if not 0 <= seq < 10**SEQ_DIGITS:
        raise ValueError(f"segment sequence {seq} out of range")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(created_ns // 1_000_000_000))
    return SegmentName(seq, stamp, is_open)


def parse_name(name: str) -> SegmentName | None:
    """Parse a file name; None for files that are not segments."""
    m = _NAME_RE.match(name)
    if m is None:
        return None
    return SegmentName(int(m.group(1)), m.group(2), m.group(3) is not None)


def list_segments(directory: Path | str) -> list[tuple[SegmentName, Path]]:
    """All segments in ``directory`` (sealed and open), in sequence order."""
    directory = Path(directory)
    found = []
    for path in directory.iterdir():
        parsed = parse_name(path.name)
        if parsed is not None:
            found.append((parsed, path))
    found.sort(key=lambda item: (item[0].seq, item[0].is_open))
    return found


def list_sealed(directory: Path | str) -> list[Path]:
    """Sealed segment paths in sequence order (what a loader may read)."""
    return [path for name, path in list_segments(directory) if not name.is_open]


def next_seq(directory: Path | str) -> int:
    """The sequence number after the highest one ever used in ``directory``: the highest
    segment present, or what ``.seq`` remembers when older segments were pruned (0 when
    both are absent)."""
    directory = Path(directory)
    segments = list_segments(directory)
    on_disk = segments[-1][0].seq + 1 if segments else 0
    try:
        remembered = int((directory / SEQ_NAME).read_text().strip())
    except (FileNotFoundError, ValueError):
        remembered = 0
    return max(on_disk, remembered)
