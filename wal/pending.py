"""Records waiting in the writer's queue: what each costs in memory, batching, encoding.

Pure code. A record is queued either as its encoded line (bytes) or, for a received
text frame, as the raw tuple ``(ts_ns, conn, n, text)``: the receive loop then only
builds a tuple, and the writer thread encodes a whole batch at once.
"""

from __future__ import annotations

import sys

from wal import records as rec

# What a queued record costs beyond sys.getsizeof of its payload, so that the buffer bound
# is the memory really used (RSS measured on CPython 3.11, 64-bit: 180-200 B a frame).
# A frame is a 4-tuple (72 B) holding two ints of its own (ts_ns 36 B, n 28 B) in a list
# slot (8 B plus over-allocation), each object rounded up by the allocator.
FRAME_OVERHEAD_BYTES = 200
LINE_OVERHEAD_BYTES = 32  # an encoded line: its list slot and the allocator's rounding
FRAME_LINE_BYTES = 64  # the JSON around a frame's text, to size batches before encoding
_FRAME_PREFIX = b'{"type":"frame"'

Item = bytes | rec.RawFrame  # a queued record: an encoded line, or a frame to encode


def item_cost(item: Item) -> int:
    """Bytes of memory a queued record holds (see FRAME_OVERHEAD_BYTES)."""
    if isinstance(item, tuple):
        return sys.getsizeof(item[3]) + FRAME_OVERHEAD_BYTES
    return sys.getsizeof(item) + LINE_OVERHEAD_BYTES


def item_size(item: Item) -> int:
    """About how many bytes the record's line takes (exact for encoded lines)."""
    if isinstance(item, tuple):
        return len(item[3]) + FRAME_LINE_BYTES
    return len(item)


def split_items(items: list[Item], limit: int) -> list[tuple[list[Item], int]]:
    """Group records, in order, into batches of about ``limit`` bytes of lines (a longer
    record makes a batch of its own), each with its memory cost: one batch is one zstd
    frame."""
    chunks: list[tuple[list[Item], int]] = []
    start, size, cost = 0, 0, 0
    for i, item in enumerate(items):
        line = item_size(item)
        if i > start and size + line > limit:
            chunks.append((items[start:i], cost))
            start, size, cost = i, 0, 0
        size += line
        cost += item_cost(item)
    if start < len(items):
        chunks.append((items[start:], cost))
    return chunks


def encode_items(items: list[Item]) -> tuple[bytes, int]:
    """The batch's lines joined, and how many of them are frames. Runs of queued text
    frames are encoded together (``records.encode_frames``)."""
    lines: list[bytes] = []
    run: list[rec.RawFrame] = []
    frames = 0
    for item in items:
        if isinstance(item, tuple):
            run.append(item)
            continue
        if run:
            lines += rec.encode_frames(run)
            frames += len(run)
            run = []
        lines.append(item)
        frames += item.startswith(_FRAME_PREFIX)
    if run:
        lines += rec.encode_frames(run)
        frames += len(run)
    return b"".join(lines), frames
