"""The write-ahead log: segment format v1, writer, reader, recovery.

Knows nothing of Polymarket, asyncio or SQL. See DESIGN.md, "WAL format, version 1".
"""

from wal.errors import (
    BadOffsetError,
    CorruptSegmentError,
    SegmentChangedError,
    WalClosedError,
    WalError,
    WalFatalError,
    WalLockedError,
    WalWriteError,
)
from wal.fsutil import FileOps, write_durably
from wal.naming import SegmentName, list_sealed, list_segments, make_name, parse_name
from wal.policy import Policy
from wal.reader import Batch, SegmentReader, read_records
from wal.records import FORMAT_VERSION, Record, decode_line, encode_record
from wal.recovery import RecoveryReport, recover_directory
from wal.stats import Hooks, WriterStats
from wal.writer import WalWriter

__all__ = [
    "FORMAT_VERSION",
    "BadOffsetError",
    "Batch",
    "CorruptSegmentError",
    "FileOps",
    "Hooks",
    "Policy",
    "Record",
    "RecoveryReport",
    "SegmentChangedError",
    "SegmentName",
    "SegmentReader",
    "WalClosedError",
    "WalError",
    "WalFatalError",
    "WalLockedError",
    "WalWriteError",
    "WalWriter",
    "WriterStats",
    "decode_line",
    "encode_record",
    "list_sealed",
    "list_segments",
    "make_name",
    "parse_name",
    "read_records",
    "recover_directory",
    "write_durably",
]
