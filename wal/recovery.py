"""Crash recovery: seal every ``.open`` segment a dead writer left behind.

Everything after the last complete, checksum-valid frame is cut (a torn tail is the
normal result of a crash). The cut bytes are not thrown away: they are copied to
``torn/NAME.torn`` first. Then a ``seal`` record with ``recovered: true`` and
``truncated_bytes`` is appended, and the file is renamed to its sealed name.
"""

from __future__ import annotations

import calendar
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wal import records as rec
from wal.errors import CorruptSegmentError
from wal.fsutil import REAL_OPS, FileOps, write_durably
from wal.naming import TORN_DIR, SegmentName, list_segments
from wal.reader import SegmentReader
from wal.segment import OpenSegment, compressor
from wal.writer_info import DEFAULT_WRITER

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecoveryReport:
    sealed_path: Path
    records: int  # records kept, the header included, the recovery seal not
    frames: int
    truncated_bytes: int
    torn_copy: Path | None  # where the cut bytes were kept
    cause: str | None  # why reading stopped, when bytes were cut
    was_complete: bool  # the file already ended with a seal (crash before rename)

    def describe(self) -> str:
        if self.was_complete:
            return f"{self.sealed_path.name}: already sealed, renamed"
        text = (
            f"{self.sealed_path.name}: recovered {self.records} records "
            f"({self.frames} frames), cut {self.truncated_bytes} torn bytes"
        )
        if self.torn_copy is not None:
            text += f" (kept in {self.torn_copy}; cause: {self.cause})"
        return text


def recover_directory(
    directory: Path | str,
    *,
    ops: FileOps = REAL_OPS,
    writer: str = DEFAULT_WRITER,
    level: int = 3,
    clock_ns: Callable[[], int] = time.time_ns,
) -> list[RecoveryReport]:
    """Seal every ``.open`` segment in ``directory``. Call only while holding its lock."""
    directory = Path(directory)
    reports = []
    for name, path in list_segments(directory):
        if name.is_open:
            report = recover_segment(
                path, name, ops=ops, writer=writer, level=level, clock_ns=clock_ns
            )
            log.warning("crash recovery: %s", report.describe())
            reports.append(report)
    return reports


def recover_segment(
    path: Path,
    name: SegmentName,
    *,
    ops: FileOps = REAL_OPS,
    writer: str = DEFAULT_WRITER,
    level: int = 3,
    clock_ns: Callable[[], int] = time.time_ns,
) -> RecoveryReport:
    size = path.stat().st_size
    valid_end, records, frames, last_type, cause = _scan(path)
    truncated = size - valid_end
    torn_copy = _keep_torn_bytes(path, valid_end, ops) if truncated else None
    segment = OpenSegment.reopen(path.parent, name, ops, size=valid_end)
    try:
        segment.records, segment.frames = records, frames
        if last_type != "seal":
            cctx = compressor(level)
            if valid_end == 0:
                header = rec.segment_header(name.seq, _stamp_ns(name.stamp), writer)
                segment.append_frame(cctx.compress(rec.encode_record(header)), 1, 0)
            seal = rec.seal(
                clock_ns(),
                segment.records + 1,
                segment.frames,
                recovered=True,
                truncated_bytes=truncated,
            )
            segment.append_frame(cctx.compress(rec.encode_record(seal)), 1, 0)
        sealed = segment.finish()
    finally:
        segment.close()
    return RecoveryReport(
        sealed, records, frames, truncated, torn_copy, cause, was_complete=last_type == "seal"
    )


def _scan(path: Path) -> tuple[int, int, int, str | None, str | None]:
    """Read an open segment as far as it is good: (valid_end, records, frames, last type,
    cause of stopping early)."""
    reader = SegmentReader(path, tolerate_torn_tail=True)
    valid_end = records = frames = 0
    last_type = None
    cause = None
    for batch in reader.batches():
        try:
            decoded = batch.records()
        except CorruptSegmentError as exc:
            cause = exc.cause
            break
        valid_end = batch.end
        records += len(decoded)
        frames += sum(1 for r in decoded if r["type"] == "frame")
        if decoded:
            last_type = decoded[-1]["type"]
    else:
        cause = reader.torn_cause
    return valid_end, records, frames, last_type, cause


def _keep_torn_bytes(path: Path, valid_end: int, ops: FileOps) -> Path:
    torn_dir = path.parent / TORN_DIR
    if not torn_dir.exists():
        torn_dir.mkdir()
        ops.fsync_dir(path.parent)  # so the kept bytes survive a power cut too
    with open(path, "rb") as f:
        f.seek(valid_end)
        tail = f.read()
    target = torn_dir / f"{path.name}.{valid_end}.torn"
    write_durably(target, tail, ops)
    return target


def _stamp_ns(stamp: str) -> int:
    return calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%SZ")) * 1_000_000_000
