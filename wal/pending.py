"""Records waiting in the writer's queue: what each costs in memory, batching, encoding.

Pure code. Every queued record is a 4-tuple: a received frame as it arrived,
``(ts_ns, conn, n, message)``, or an encoded line as ``(None, 0, 0, line)``. The receive
loop then only builds a tuple, and the writer thread encodes a whole batch of frames in
a few C calls (``records.encode_frames``).
"""

from __future__ import annotations

from operator import itemgetter
from sys import getsizeof

from wal import records as rec

# What a queued record costs beyond sys.getsizeof of its payload, so that the buffer bound
# is the memory really used (RSS measured on CPython 3.11, 64-bit: 180-200 B a frame).
# A record is a 4-tuple (72 B) holding two ints of its own (ts_ns 36 B, n 28 B) in a list
# slot (8 B plus over-allocation), each object rounded up by the allocator.
OVERHEAD_BYTES = 200
FRAME_LINE_BYTES = 64  # the JSON around a frame's text, to size batches before encoding
_FRAME_PREFIX = b'{"type":"frame"'
_TS = itemgetter(0)

Item = tuple[int | None, int, int, str | bytes]


def line_item(line: bytes) -> Item:
    """A record already encoded, queued among frames."""
    return (None, 0, 0, line)


def item_cost(item: Item) -> int:
    """Bytes of memory a queued record holds (see OVERHEAD_BYTES)."""
    return getsizeof(item[3]) + OVERHEAD_BYTES


def item_size(item: Item) -> int:
    """About how many bytes the record's line takes."""
    return len(item[3]) + FRAME_LINE_BYTES


def split_items(items: list[Item], limit: int) -> list[tuple[list[Item], int]]:
    """Group records, in order, into batches of about ``limit`` bytes of lines (a longer
    record makes a batch of its own), each with its memory cost. The writer cuts batches
    as records arrive; this is for when records go back to the queue after a failure."""
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
    """The batch's lines joined, and how many of them are frames."""
    if None not in map(_TS, items):  # frames only: the usual batch
        return rec.encode_frames(items), len(items)  # type: ignore[arg-type]
    out: list[bytes] = []
    run: list[rec.RawFrame] = []
    frames = 0
    for item in items:
        ts_ns, conn, n, payload = item
        if ts_ns is not None:
            run.append((ts_ns, conn, n, payload))
            continue
        if run:
            out.append(rec.encode_frames(run))
            frames += len(run)
            run = []
        assert isinstance(payload, bytes)
        out.append(payload)
        frames += payload.startswith(_FRAME_PREFIX)
    if run:
        out.append(rec.encode_frames(run))
        frames += len(run)
    return b"".join(out), frames
