"""Finding zstd frame boundaries without decompressing (pure).

A segment is a plain concatenation of zstd frames. To give every record the byte offset
of its frame, and to tell a torn tail from a complete frame, the reader walks frame and
block headers (RFC 8878, section 3.1.1) to learn where each frame ends. Only headers are
read, so walking a segment costs a few bytes per 128 KiB block, not the whole file.

The bytes come from anything with ``len()`` and slicing: a ``bytes`` value, or the
reader's file view that answers slices with ordinary reads (never ``mmap``, which turns
a file truncated under the reader into SIGBUS).
"""

from __future__ import annotations

from typing import Protocol, overload


class Buffer(Protocol):
    """What frame_end reads: a sized sequence of bytes (``bytes``, or a file view)."""

    def __len__(self) -> int: ...

    @overload
    def __getitem__(self, key: int) -> int: ...

    @overload
    def __getitem__(self, key: slice) -> bytes: ...


ZSTD_MAGIC = 0xFD2FB528
_SKIPPABLE_MASK = 0xFFFFFFF0
_SKIPPABLE_MAGIC = 0x184D2A50
_BLOCK_HEADER = 3
_CHECKSUM = 4
_DICT_ID_SIZES = (0, 1, 2, 4)
_FCS_SIZES = (0, 2, 4, 8)  # by Frame_Content_Size_flag; flag 0 means 1 byte if single-segment


class Incomplete(Exception):
    """The buffer ends inside the frame: more bytes are needed (a torn tail if at EOF)."""


class Malformed(Exception):
    """The bytes cannot be a zstd frame; the message says why."""


def frame_end(buf: Buffer, pos: int) -> tuple[int, bool]:
    """Return ``(end, has_checksum)`` for the frame starting at ``pos``.

    ``end`` is the offset just past the frame. Skippable frames return
    ``has_checksum=False``. Raises Incomplete or Malformed.
    """
    size = len(buf)
    if size - pos < 4:
        raise Incomplete("frame magic number cut short")
    magic = int.from_bytes(buf[pos : pos + 4], "little")
    if magic & _SKIPPABLE_MASK == _SKIPPABLE_MAGIC:
        if size - pos < 8:
            raise Incomplete("skippable frame header cut short")
        end = pos + 8 + int.from_bytes(buf[pos + 4 : pos + 8], "little")
        if end > size:
            raise Incomplete("skippable frame cut short")
        return end, False
    if magic != ZSTD_MAGIC:
        raise Malformed(f"expected zstd magic number, found 0x{magic:08x}")
    if size - pos < 5:
        raise Incomplete("frame header cut short")
    descriptor = buf[pos + 4]
    fcs_flag = descriptor >> 6
    single_segment = (descriptor >> 5) & 1
    if (descriptor >> 3) & 1:
        raise Malformed("reserved bit set in frame header descriptor")
    has_checksum = bool((descriptor >> 2) & 1)
    dict_id_size = _DICT_ID_SIZES[descriptor & 3]
    fcs_size = _FCS_SIZES[fcs_flag] or (1 if single_segment else 0)
    p = pos + 5 + (0 if single_segment else 1) + dict_id_size + fcs_size
    while True:
        if size - p < _BLOCK_HEADER:
            raise Incomplete("block header cut short")
        header = int.from_bytes(buf[p : p + _BLOCK_HEADER], "little")
        last = header & 1
        block_type = (header >> 1) & 3
        block_size = header >> 3
        if block_type == 3:
            raise Malformed("reserved block type")
        p += _BLOCK_HEADER + (1 if block_type == 1 else block_size)
        if p > size:
            raise Incomplete("block cut short")
        if last:
            break
    if has_checksum:
        p += _CHECKSUM
        if p > size:
            raise Incomplete("content checksum cut short")
    return p, has_checksum
