"""Reading segments: batches (one per zstd frame) and records, with byte offsets.

A sealed segment must be intact: any damage raises CorruptSegmentError naming the file,
the offset of the frame and the cause. An ``.open`` segment is being written (or was,
when a crash stopped it): reading stops cleanly at the first frame that cannot be read
in full, and ``torn_cause`` says why. That torn tail is the normal result of a crash.

Files are read with ordinary reads, one zstd frame at a time, never ``mmap``: a file
that shrinks under the reader (a ``cp`` restore over it) raises SegmentChangedError, a
disk error raises the OSError as it is, and memory holds one frame, not the file.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import overload

import zstandard

from wal import zframe
from wal.errors import BadOffsetError, CorruptSegmentError, SegmentChangedError
from wal.naming import OPEN_SUFFIX
from wal.records import FORMAT_VERSION, Record, decode_line

# A batch never decompresses to more than this; a header claiming more is corrupt.
MAX_BATCH_BYTES = 1 << 30
# Small reads (frame and block headers) fetch this much: one page, and a whole small
# segment in one read, without reading much of a big one just to walk its headers.
READ_WINDOW = 4096
# Reading every batch, fetch this much at once: the headers of the next frames and their
# bytes come in one read (fewer system calls, each of which lets another thread run).
BATCHES_WINDOW = 1 << 20
ZSTD_FRAME_MAGIC = zframe.ZSTD_MAGIC.to_bytes(4, "little")


@dataclass(frozen=True)
class Batch:
    """The records of one zstd frame. ``offset``/``end``: the frame's byte range.

    ``data`` is the decompressed frame: whole lines, each ending in ``\\n``.
    """

    path: Path
    offset: int
    end: int
    data: bytes

    @cached_property
    def lines(self) -> list[bytes]:
        """The lines, without their ``\\n``."""
        return self.data.split(b"\n")[:-1]

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


class SegmentFile:
    """A segment opened for ordinary reads, seen at the size it had when opened.

    Slicing it reads those bytes (``pread``), so frame_end can walk headers in place;
    a read shorter than ``window`` fetches ``window`` bytes and answers the next from
    them. A read that ends early means the file shrank: SegmentChangedError.
    """

    def __init__(self, path: Path | str, window: int = READ_WINDOW) -> None:
        self.path = path if isinstance(path, Path) else Path(path)
        self.window = window
        self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            st = os.fstat(self.fd)
        except BaseException:
            os.close(self.fd)
            raise
        self.size = st.st_size
        self._seen = (st.st_size, st.st_mtime_ns)
        self._window_start = 0
        self._window = b""

    def __enter__(self) -> SegmentFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __len__(self) -> int:
        return self.size

    @overload
    def __getitem__(self, key: int) -> int: ...

    @overload
    def __getitem__(self, key: slice) -> bytes: ...

    def __getitem__(self, key: int | slice) -> int | bytes:
        if isinstance(key, int):
            return self.read(key, key + 1)[0]
        return self.read(key.start or 0, self.size if key.stop is None else key.stop)

    def read(self, start: int, stop: int) -> bytes:
        """Bytes ``[start, stop)``, cut at the size seen at open."""
        stop = min(stop, self.size)
        if stop <= start:
            return b""
        window_end = self._window_start + len(self._window)
        if self._window_start <= start and stop <= window_end:
            return self._window[start - self._window_start : stop - self._window_start]
        if stop - start >= self.window:
            return self._pread(start, stop - start)
        self._window_start = start
        self._window = self._pread(start, min(self.window, self.size - start))
        return self._window[: stop - start]

    def _pread(self, offset: int, count: int) -> bytes:
        parts = []
        done = 0
        while done < count:
            chunk = os.pread(self.fd, count - done, offset + done)
            if not chunk:
                raise SegmentChangedError(
                    self.path,
                    offset + done,
                    f"the file shrank: it ends here now but had {self.size} bytes at first",
                )
            parts.append(chunk)
            done += len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def change(self, *, growing_ok: bool) -> str | None:
        """How the file differs from when it was opened, or None. An ``.open`` segment
        grows as it is written (``growing_ok``); only shrinking is a change then."""
        st = os.fstat(self.fd)
        if st.st_size < self.size:
            return f"it shrank from {self.size} to {st.st_size} bytes"
        if not growing_ok and (st.st_size, st.st_mtime_ns) != self._seen:
            return f"it was rewritten ({self.size} bytes before, {st.st_size} now)"
        return None


class SegmentReader:
    """Iterate one segment. ``tolerate_torn_tail`` defaults to True for ``.open`` files.

    After iterating, ``valid_end`` is the offset just past the last good frame and
    ``torn_cause`` is None, or why reading stopped early (tolerant mode only).
    """

    def __init__(self, path: Path | str, *, tolerate_torn_tail: bool | None = None) -> None:
        self.path = path if isinstance(path, Path) else Path(path)
        if tolerate_torn_tail is None:
            tolerate_torn_tail = self.path.name.endswith(OPEN_SUFFIX)
        self.tolerant = tolerate_torn_tail
        self.valid_end = 0
        self.torn_cause: str | None = None
        self._start = 0
        self._file: SegmentFile | None = None
        self._dctx = _decompressor()

    def batches(self, start_offset: int = 0) -> Iterator[Batch]:
        """Yield each batch from ``start_offset`` (which must be a frame boundary)."""
        self.valid_end = start_offset
        self.torn_cause = None
        self._start = start_offset
        with SegmentFile(self.path, window=BATCHES_WINDOW) as f:
            self._file = f
            size = len(f)
            if start_offset < 0 or start_offset > size:
                raise BadOffsetError(self.path, start_offset, f"the file has {size} bytes")
            if size == 0 or start_offset == size:
                if start_offset == 0:
                    self._fail(0, "empty file: no segment header")
                return
            yield from self._walk(f, start_offset)

    def records(self, start_offset: int = 0) -> Iterator[tuple[int, Record]]:
        """Yield ``(frame_offset, record)`` for every record from ``start_offset``."""
        for batch in self.batches(start_offset):
            for record in batch.records():
                yield batch.offset, record

    def _walk(self, f: SegmentFile, pos: int) -> Iterator[Batch]:
        size = len(f)
        first = pos == 0
        after_seal = False
        last_line: bytes | None = None
        while pos < size:
            batch = self.read_frame(f, pos)
            if batch is None:
                return
            if first:
                if self._bad_header(batch):
                    return
                first = False
            if batch.data:
                if after_seal:
                    self._fail(pos, "records after the seal record")
                    return
                last_line = last_line_of(batch.data)
                after_seal = is_seal_line(last_line)
            self.valid_end = batch.end
            pos = batch.end
            yield batch
        change = f.change(growing_ok=self.tolerant)  # reads come from a window: look once more
        if change is not None:
            raise SegmentChangedError(self.path, pos, change)
        if not self.tolerant and last_line is not None:
            last_type = _record_type(last_line)
            if last_type is not None and last_type != "seal":
                self._fail(size, "sealed segment does not end with a seal record (truncated?)")

    def read_frame(self, f: SegmentFile, pos: int) -> Batch | None:
        """The batch of the frame at ``pos``; None when tolerant and it cannot be read."""
        self._file = f
        try:
            end, has_checksum = zframe.frame_end(f, pos)
        except zframe.Incomplete as exc:
            self._fail(pos, f"incomplete zstd frame ({exc}), {len(f) - pos} bytes at end")
            return None
        except zframe.Malformed as exc:
            if pos == self._start > 0:
                raise BadOffsetError(self.path, pos, str(exc)) from None
            self._fail(pos, f"not a zstd frame: {exc}")
            return None
        data = f.read(pos, end)
        if data[:4] != ZSTD_FRAME_MAGIC:  # a skippable frame: no records
            return Batch(self.path, pos, end, b"")
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
        return Batch(self.path, pos, end, raw)

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
        if batch.data:
            try:
                header = decode_line(batch.data[: batch.data.index(b"\n")])
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
        """Damage at ``offset``: an error (sealed) or the torn tail (tolerant), unless the
        file changed under us, which is SegmentChangedError either way."""
        if self._file is not None:
            change = self._file.change(growing_ok=self.tolerant)
            if change is not None:
                raise SegmentChangedError(self.path, offset, f"{change}; then: {cause}")
        if not self.tolerant:
            raise CorruptSegmentError(self.path, offset, cause)
        self.torn_cause = f"at byte offset {offset}: {cause}"


_per_thread = threading.local()


def _decompressor() -> zstandard.ZstdDecompressor:
    """This thread's decompressor: one is not safe to share across threads, and making
    one per segment costs more than reading a small segment."""
    dctx: zstandard.ZstdDecompressor | None = getattr(_per_thread, "dctx", None)
    if dctx is None:
        dctx = _per_thread.dctx = zstandard.ZstdDecompressor()
    return dctx


def last_line_of(data: bytes) -> bytes:
    """The last line of a batch's bytes (which end with ``\\n``), without it."""
    return data[data.rfind(b"\n", 0, len(data) - 1) + 1 : -1]


def is_seal_line(line: bytes) -> bool:
    """Whether ``line`` is a seal record. Decodes only lines that can be one: a JSON
    string equal to "seal" is those bytes literally or holds a ``\\u`` escape."""
    if b"seal" not in line and b"\\u" not in line:
        return False
    return _record_type(line) == "seal"


def _record_type(line: bytes) -> str | None:
    try:
        return decode_line(line).get("type")
    except (UnicodeDecodeError, ValueError):
        return None


def read_records(path: Path | str, start_offset: int = 0) -> Iterator[tuple[int, Record]]:
    """Shorthand for ``SegmentReader(path).records(start_offset)``."""
    return SegmentReader(path).records(start_offset)
