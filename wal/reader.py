"""Reading segments: batches (one per zstd frame) and records, with byte offsets.

A sealed segment must be intact: any damage raises CorruptSegmentError naming the file,
the offset of the frame and the cause. An ``.open`` segment is being written (or was,
when a crash stopped it): reading stops cleanly at the first frame that cannot be read
in full, and ``torn_cause`` says why. That torn tail is the normal result of a crash.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import zstandard

from wal import zframe
from wal.errors import BadOffsetError, CorruptSegmentError
from wal.naming import OPEN_SUFFIX
from wal.records import FORMAT_VERSION, Record, decode_line

# A batch never decompresses to more than this; a header claiming more is corrupt.
MAX_BATCH_BYTES = 1 << 30


@dataclass(frozen=True)
class Batch:
    """The lines of one zstd frame. ``offset``/``end``: the frame's byte range."""

    path: Path
    offset: int
    end: int
    lines: list[bytes]  # without their "\n"

    def records(self) -> list[Record]:
        """Decode every line; a bad line is corruption at this batch's offset."""
        out = []
        for i, line in enumerate(self.lines):
            try:
                out.append(decode_line(line))
            except (UnicodeDecodeError, ValueError) as exc:
                raise CorruptSegmentError(
                    self.path, self.offset, f"line {i + 1} of the batch is not a record: {exc}"
                ) from None
        return out


class SegmentReader:
    """Iterate one segment. ``tolerate_torn_tail`` defaults to True for ``.open`` files.

    After iterating, ``valid_end`` is the offset just past the last good frame and
    ``torn_cause`` is None, or why reading stopped early (tolerant mode only).
    """

    def __init__(self, path: Path | str, *, tolerate_torn_tail: bool | None = None) -> None:
        self.path = Path(path)
        if tolerate_torn_tail is None:
            tolerate_torn_tail = self.path.name.endswith(OPEN_SUFFIX)
        self.tolerant = tolerate_torn_tail
        self.valid_end = 0
        self.torn_cause: str | None = None
        self._start = 0
        self._dctx = zstandard.ZstdDecompressor()

    def batches(self, start_offset: int = 0) -> Iterator[Batch]:
        """Yield each batch from ``start_offset`` (which must be a frame boundary)."""
        self.valid_end = start_offset
        self.torn_cause = None
        self._start = start_offset
        with open(self.path, "rb") as f:
            size = f.seek(0, 2)
            if start_offset < 0 or start_offset > size:
                raise BadOffsetError(self.path, start_offset, f"the file has {size} bytes")
            if size == 0 or start_offset == size:
                if start_offset == 0:
                    self._fail(0, "empty file: no segment header")
                return
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                yield from self._walk(buf, start_offset)

    def records(self, start_offset: int = 0) -> Iterator[tuple[int, Record]]:
        """Yield ``(frame_offset, record)`` for every record from ``start_offset``."""
        for batch in self.batches(start_offset):
            for record in batch.records():
                yield batch.offset, record

    def _walk(self, buf: mmap.mmap, pos: int) -> Iterator[Batch]:
        size = len(buf)
        first = pos == 0
        last_type = None
        while pos < size:
            batch = self._read_frame(buf, pos)
            if batch is None:
                return
            if first:
                if self._bad_header(batch):
                    return
                first = False
            if batch.lines and last_type == "seal":
                self._fail(pos, "records after the seal record")
                return
            if batch.lines:
                last_type = _record_type(batch.lines[-1])
            self.valid_end = batch.end
            pos = batch.end
            yield batch
        if not self.tolerant and last_type is not None and last_type != "seal":
            self._fail(size, "sealed segment does not end with a seal record (truncated?)")

    def _read_frame(self, buf: mmap.mmap, pos: int) -> Batch | None:
        try:
            end, has_checksum = zframe.frame_end(buf, pos)
        except zframe.Incomplete as exc:
            self._fail(pos, f"incomplete zstd frame ({exc}), {len(buf) - pos} bytes at end")
            return None
        except zframe.Malformed as exc:
            if pos == self._start > 0:
                raise BadOffsetError(self.path, pos, str(exc)) from None
            self._fail(pos, f"not a zstd frame: {exc}")
            return None
        data = buf[pos:end]
        if data[:4] != b"\x28\xb5\x2f\xfd":  # a skippable frame: no records
            return Batch(self.path, pos, end, [])
        if not has_checksum:
            self._fail(pos, "zstd frame written without content checksum")
            return None
        try:
            raw = self._decompress(data)
        except zstandard.ZstdError as exc:
            self._fail(pos, f"zstd frame does not decompress (checksum or data damaged): {exc}")
            return None
        if raw and not raw.endswith(b"\n"):
            self._fail(pos, "batch does not end with a newline")
            return None
        lines = raw.split(b"\n")
        lines.pop()
        return Batch(self.path, pos, end, lines)

    def _decompress(self, data: bytes) -> bytes:
        params = zstandard.get_frame_parameters(data)
        if params.content_size == zstandard.CONTENTSIZE_UNKNOWN:
            out: bytes = self._dctx.decompressobj().decompress(data)
            return out
        if params.content_size > MAX_BATCH_BYTES:
            raise zstandard.ZstdError(f"frame claims {params.content_size} bytes")
        return self._dctx.decompress(data)

    def _bad_header(self, batch: Batch) -> bool:
        header: Record | None = None
        if batch.lines:
            try:
                header = decode_line(batch.lines[0])
            except (UnicodeDecodeError, ValueError):
                header = None
        if header is None or header.get("type") != "segment":
            self._fail(batch.offset, "missing segment header record")
            return True
        if header.get("v") != FORMAT_VERSION:
            self._fail(
                batch.offset,
                f"unsupported format version {header.get('v')!r} (this reader knows "
                f"{FORMAT_VERSION}); upgrade polymarket-capture",
            )
            return True
        return False

    def _fail(self, offset: int, cause: str) -> None:
        if not self.tolerant:
            raise CorruptSegmentError(self.path, offset, cause)
        self.torn_cause = f"at byte offset {offset}: {cause}"


def _record_type(line: bytes) -> str | None:
    try:
        return decode_line(line).get("type")
    except (UnicodeDecodeError, ValueError):
        return None


def read_records(path: Path | str, start_offset: int = 0) -> Iterator[tuple[int, Record]]:
    """Shorthand for ``SegmentReader(path).records(start_offset)``."""
    return SegmentReader(path).records(start_offset)
