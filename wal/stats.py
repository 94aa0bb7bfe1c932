"""What the writer reports: counters for status and metrics, and optional hooks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wal.errors import WalWriteError
from wal.recovery import RecoveryReport


@dataclass
class WriterStats:
    """Counters, read by status reports and metrics (plain ints; read without a lock)."""

    appended: int = 0  # records accepted (line numbers handed out)
    durable: int = 0  # records fsynced; line numbers up to this one are safe
    dropped_total: int = 0  # records refused because the buffer was full
    bytes_in: int = 0  # uncompressed bytes made durable
    bytes_out: int = 0  # compressed bytes written
    batches: int = 0
    segments_sealed: int = 0
    buffered_bytes: int = 0  # accepted but not yet durable
    last_fsync_s: float = 0.0
    write_errors: int = 0
    last_error: str | None = None
    current_segment: str | None = None
    recovered: list[RecoveryReport] = field(default_factory=list)


@dataclass(frozen=True)
class Hooks:
    """Optional callbacks, called from the writer thread (keep them quick)."""

    on_fsync: Callable[[float], None] | None = None  # seconds one batch write+fsync took
    on_seal: Callable[[Path, dict[str, Any]], None] | None = None  # sealed path, seal record
    on_error: Callable[[WalWriteError], None] | None = None
