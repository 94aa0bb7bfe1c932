"""The WAL's exceptions. Every one says what happened, where, and what to do.

Tree::

    WalError
    ├── CorruptSegmentError   a sealed segment (or a non-tail part of one) is damaged
    │   └── BadOffsetError    reading was asked to start where no frame starts
    ├── SegmentChangedError   a segment shrank or was rewritten while it was read (a
    │                         restore copied over it): not damage, read it again later
    ├── WalLockedError        another writer holds the directory's lock
    ├── WalWriteError         the disk refused a write, fsync or rename
    ├── WalClosedError        append after close()
    └── WalFatalError         the writer thread died of an unexpected error
"""

from __future__ import annotations

from pathlib import Path


class WalError(Exception):
    """Root of every error the wal package raises."""


class CorruptSegmentError(WalError):
    """A segment holds bytes that cannot be read as format v1.

    ``offset`` is the byte offset of the zstd frame (or header) where reading failed.
    """

    def __init__(self, path: Path | str, offset: int, cause: str) -> None:
        self.path = Path(path)
        self.offset = offset
        self.cause = cause
        super().__init__(
            f"{self.path}: corrupt at byte offset {offset}: {cause}. "
            "Frames before this offset are intact; run `wal verify` on the directory "
            "and restore this segment from a backup if you have one."
        )


class BadOffsetError(CorruptSegmentError):
    """A start offset that is not a frame boundary of this segment (or the file changed)."""

    def __init__(self, path: Path | str, offset: int, cause: str) -> None:
        WalError.__init__(
            self,
            f"{path}: byte offset {offset} is not the start of a zstd frame ({cause}). "
            "List the frame offsets with `wal cat --offsets`; if a loader stored this "
            "offset, the file was replaced since it was loaded.",
        )
        self.path = Path(path)
        self.offset = offset
        self.cause = cause


class SegmentChangedError(WalError):
    """A segment file changed under a reader: it shrank (the read ended before the size
    the file had when reading began) or, for a sealed segment, its size or mtime moved.

    Not a CorruptSegmentError: the bytes read were not damaged, they were replaced, and
    reading again once the writer of the file (a ``cp`` restore, say) is done may well
    succeed. An ``OSError`` while reading is never wrapped into this or any WalError.
    """

    def __init__(self, path: Path | str, offset: int, cause: str) -> None:
        self.path = Path(path)
        self.offset = offset
        self.cause = cause
        super().__init__(
            f"{self.path}: changed while it was read (at byte offset {offset}: {cause}). "
            "A sealed segment is never modified by capture: if a restore or copy is "
            "writing it, wait for that to finish and read it again."
        )


class WalLockedError(WalError):
    """Another process already writes to this WAL directory."""

    def __init__(self, directory: Path, holder: str) -> None:
        self.directory = directory
        super().__init__(
            f"WAL directory {directory} is locked by another writer ({holder}). "
            "Only one capture daemon may write a directory: stop the other one or "
            "give this one its own --wal-dir."
        )


class WalWriteError(WalError):
    """The disk refused an operation; the writer keeps the data in memory and retries."""


class WalClosedError(WalError):
    """The writer was closed; nothing more can be appended."""


class WalFatalError(WalError):
    """The writer thread stopped on an unexpected error; nothing more will be written.

    Restart the process: recovery at the next start seals the open segment."""
