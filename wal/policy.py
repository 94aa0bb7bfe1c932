"""When to flush a batch and when to rotate a segment (pure; times passed in)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_FLUSH_MS = 100  # bounds what a crash can lose to ~0.1 s of frames
DEFAULT_BATCH_BYTES = 1 << 20  # 1 MiB: one zstd frame stays quick to decompress
DEFAULT_ROTATE_S = 300.0  # the loader sees data at most ~5 min late by default
DEFAULT_ROTATE_BYTES = 64 << 20  # compressed; keeps a segment easy to copy and reparse
DEFAULT_MAX_BUFFER_BYTES = 256 << 20  # memory for unwritten records before we drop
DEFAULT_LEVEL = 1  # zstd level 1: on feed JSON as small as level 3 (~8x), at twice its speed


@dataclass(frozen=True)
class Policy:
    flush_ms: int = DEFAULT_FLUSH_MS
    batch_bytes: int = DEFAULT_BATCH_BYTES
    rotate_s: float = DEFAULT_ROTATE_S
    rotate_bytes: int = DEFAULT_ROTATE_BYTES
    max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES

    def __post_init__(self) -> None:
        if self.flush_ms < 0 or self.batch_bytes <= 0 or self.rotate_s <= 0:
            raise ValueError("flush_ms, batch_bytes and rotate_s must be positive")
        if self.rotate_bytes <= 0 or self.max_buffer_bytes < self.batch_bytes:
            raise ValueError("rotate_bytes must be positive and max_buffer >= batch_bytes")

    def flush_deadline(self, first_pending_at: float) -> float:
        return first_pending_at + self.flush_ms / 1000

    def flush_due(self, now: float, first_pending_at: float | None, pending_bytes: int) -> bool:
        if first_pending_at is None:
            return False
        return pending_bytes >= self.batch_bytes or now >= self.flush_deadline(first_pending_at)

    def rotate_deadline(self, opened_at: float) -> float:
        return opened_at + self.rotate_s

    def rotate_due(self, now: float, opened_at: float, segment_bytes: int) -> bool:
        return segment_bytes >= self.rotate_bytes or now >= self.rotate_deadline(opened_at)


def split_batches(lines: list[bytes], limit: int) -> list[list[bytes]]:
    """Group lines, in order, into batches of at most ``limit`` bytes (a longer line
    makes a batch of its own): one batch is one zstd frame."""
    chunks: list[list[bytes]] = []
    current: list[bytes] = []
    size = 0
    for line in lines:
        if current and size + len(line) > limit:
            chunks.append(current)
            current, size = [], 0
        current.append(line)
        size += len(line)
    if current:
        chunks.append(current)
    return chunks
