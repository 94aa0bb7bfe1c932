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


class Pending:
    """The writer's queue (used under its lock): records in order, cut into batches of
    about ``batch_bytes`` as they arrive, so that the writer thread never walks them.
    ``cuts`` holds, for each full batch, (index of its end, cost of the queue up to it)."""

    def __init__(self, batch_bytes: int) -> None:
        self.batch_bytes = batch_bytes
        self.items: list[Item] = []
        self.size = 0  # about the size of their lines
        self.cost = 0  # what they cost in memory (item_cost)
        self.cuts: list[tuple[int, int]] = []
        self.cut_size = 0  # size at the last cut

    def add(self, item: Item, size: int, cost: int) -> bool:
        """Queue a record; True when it completed a batch."""
        self.items.append(item)
        self.size += size
        self.cost += cost
        if self.size - self.cut_size >= self.batch_bytes:
            self.cut()
            return True
        return False

    def cut(self) -> None:
        """The records queued since the last cut make a full batch."""
        self.cuts.append((len(self.items), self.cost))
        self.cut_size = self.size

    def take(self) -> list[tuple[list[Item], int]]:
        """Every queued record, as the batches cut so far plus the rest, with their cost."""
        items, ends = self.items, [*self.cuts, (len(self.items), self.cost)]
        self.items, self.cuts = [], []
        self.size = self.cost = self.cut_size = 0
        batches: list[tuple[list[Item], int]] = []
        start, before = 0, 0
        for end, cost in ends:
            if end > start:
                batches.append((items[start:end], cost - before))
            start, before = end, cost
        return batches

    def requeue(self, unwritten: list[Item]) -> None:
        """Put records back at the head of the queue (a failed write), cut again."""
        items = unwritten + self.items
        self.items, self.cuts = [], []
        self.size = self.cost = self.cut_size = 0
        for item in items:
            self.add(item, item_size(item), item_cost(item))
