"""One line of ``wal ls``: a segment's size, record and frame counts, and state.

A sealed segment is answered from its seal record, the last line of its last zstd
frame: the frame headers are walked (a few bytes per block) to find that frame, and
only it is decompressed, so listing a month of WAL reads kilobytes per segment. An
``.open`` segment has no seal yet: its frames are decompressed and their lines counted
from bytes (wal.records' layout), with no JSON decoding. ``deep`` decodes every record,
as ``wal verify`` does, and counts what is really there.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from wal import zframe
from wal.errors import CorruptSegmentError
from wal.naming import OPEN_SUFFIX
from wal.reader import ZSTD_FRAME_MAGIC, SegmentFile, SegmentReader, last_line_of
from wal.records import count_frame_lines, count_lines, decode_line

SEALED, OPEN, DAMAGED = "sealed", "open", "damaged"
# Segments up to this size are read whole to walk their headers: one read instead of
# one per block, and still little memory (a 5-minute segment is megabytes, not this).
WHOLE_READ_BYTES = 256 << 10


@dataclass(frozen=True)
class Summary:
    """``records``/``frames`` are None when a damaged segment's seal cannot be read."""

    name: str
    state: str  # SEALED, OPEN or DAMAGED (a sealed segment without a readable seal)
    bytes: int
    records: int | None
    frames: int | None
    error: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def summarize(path: Path, *, deep: bool = False) -> Summary:
    """The summary of one segment. Raises FileNotFoundError if it is gone,
    SegmentChangedError if it changed while read, OSError if it cannot be read."""
    if deep:
        return _decoded(path)
    if path.name.endswith(OPEN_SUFFIX):
        return _counted(path)
    return _from_seal(path)


def _from_seal(path: Path) -> Summary:
    with SegmentFile(path) as f:
        size = len(f)
        # A small segment is read whole (one read); a big one is walked header by header.
        source: zframe.Buffer = f.read(0, size) if size <= WHOLE_READ_BYTES else f
        try:
            last = _last_zstd_frame(source, path)
            batch = SegmentReader(path, tolerate_torn_tail=False).read_frame(f, last)
        except CorruptSegmentError as exc:
            return _damaged(path.name, size, exc.offset, exc.cause)
    assert batch is not None  # a strict reader raises rather than return None
    cause = "the last frame holds no seal record"
    if batch.data:
        try:
            seal = decode_line(last_line_of(batch.data))
        except (UnicodeDecodeError, ValueError) as exc:
            seal, cause = {}, f"the last line is not a record: {exc}"
        records, frames = seal.get("records"), seal.get("frames")
        if seal.get("type") == "seal" and _count(records) and _count(frames):
            return Summary(path.name, SEALED, size, records, frames)
    return _damaged(path.name, size, last, cause)


def _last_zstd_frame(source: zframe.Buffer, path: Path) -> int:
    """The offset of the last zstd (not skippable) frame, from frame headers only."""
    pos, last = 0, None
    while pos < len(source):
        try:
            end, _ = zframe.frame_end(source, pos)
        except (zframe.Incomplete, zframe.Malformed) as exc:
            raise CorruptSegmentError(path, pos, f"cannot walk frame headers: {exc}") from None
        if source[pos : pos + 4] == ZSTD_FRAME_MAGIC:
            last = pos
        pos = end
    if last is None:
        raise CorruptSegmentError(path, 0, "no zstd frame: no segment header, no seal")
    return last


def _counted(path: Path) -> Summary:
    records = frames = 0
    reader = SegmentReader(path)
    with SegmentFile(path) as f:
        size = len(f)
    for batch in reader.batches():
        records += count_lines(batch.data)
        frames += count_frame_lines(batch.data)
    return Summary(path.name, OPEN, size, records, frames)


def _decoded(path: Path) -> Summary:
    is_open = path.name.endswith(OPEN_SUFFIX)
    records = frames = 0
    error = None
    with SegmentFile(path) as f:
        size = len(f)
    try:
        for batch in SegmentReader(path).batches():
            for record in batch.records():
                records += 1
                frames += record["type"] == "frame"
    except CorruptSegmentError as exc:
        error = f"byte offset {exc.offset}: {exc.cause}"
    return Summary(path.name, OPEN if is_open else SEALED, size, records, frames, error)


def _damaged(name: str, size: int, offset: int, cause: str) -> Summary:
    return Summary(
        name, DAMAGED, size, None, None, f"no readable seal: byte offset {offset}: {cause}"
    )


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
