"""One segment file being written: append whole zstd frames, then seal.

A frame is written with ``pwrite`` at the last durable size and fdatasynced. If either
fails, the file is cut back to that size (so no partial frame stays), the error is
raised, and the caller may retry with the same data.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from pathlib import Path

import zstandard

from wal.errors import WalWriteError
from wal.fsutil import FileOps
from wal.naming import SegmentName

log = logging.getLogger(__name__)


def compressor(level: int) -> zstandard.ZstdCompressor:
    """The format's compressor: content size and checksum in every frame."""
    return zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True)


class OpenSegment:
    """An ``.open`` segment file. ``size`` is the durable size (end of the last frame)."""

    def __init__(self, directory: Path, name: SegmentName, ops: FileOps, *, fd: int, size: int):
        self.directory = directory
        self.name = name
        self.path = directory / name.filename
        self.ops = ops
        self.fd: int | None = fd
        self.size = size
        self.records = 0
        self.frames = 0
        self.seal_written = False  # the seal frame is durable; only the rename is left
        self.renamed = False

    @classmethod
    def create(cls, directory: Path, name: SegmentName, ops: FileOps) -> OpenSegment:
        path = directory / name.filename
        try:
            fd = ops.create(path)
        except OSError as exc:
            raise _write_error("create", path, exc) from exc
        return cls(directory, name, ops, fd=fd, size=0)

    @classmethod
    def reopen(cls, directory: Path, name: SegmentName, ops: FileOps, size: int) -> OpenSegment:
        """Open an existing ``.open`` file to append at ``size`` (used by recovery)."""
        path = directory / name.filename
        try:
            fd = ops.open_existing(path)
        except OSError as exc:
            raise _write_error("open", path, exc) from exc
        return cls(directory, name, ops, fd=fd, size=size)

    def append_frame(self, frame: bytes, records: int, frames: int) -> None:
        """Write one compressed frame durably, or raise WalWriteError leaving no trace."""
        assert self.fd is not None, "segment already sealed"
        try:
            self.ops.pwrite(self.fd, frame, self.size)
            self.ops.fdatasync(self.fd)
        except OSError as exc:
            self._cut_back()
            raise _write_error("write", self.path, exc) from exc
        self.size += len(frame)
        self.records += records
        self.frames += frames

    def _cut_back(self) -> None:
        assert self.fd is not None
        # Best effort: the next append writes at self.size anyway, over any leftovers.
        with contextlib.suppress(OSError):
            self.ops.ftruncate(self.fd, self.size)

    def finish(self) -> Path:
        """Rename to the sealed name (the seal frame must already be written) and fsync
        the directory. Safe to call again after a failure: done steps are not redone."""
        sealed = self.directory / self.name.sealed_name
        if self.fd is not None:
            try:
                self.ops.ftruncate(self.fd, self.size)  # drop any bytes a failed write left
                self.ops.fsync(self.fd)
            except OSError as exc:
                raise _write_error("fsync", self.path, exc) from exc
            self.close()
        if not self.renamed:
            try:
                self.ops.rename(self.path, sealed)
            except OSError as exc:
                raise _write_error("rename", self.path, exc) from exc
            self.renamed = True
        try:
            self.ops.fsync_dir(self.directory)
        except OSError as exc:
            raise _write_error("fsync of the directory", self.directory, exc) from exc
        return sealed

    def close(self) -> None:
        """Close the file. The descriptor is gone even when close() reports an error, and
        whatever was written is already fsynced, so the error is only logged."""
        if self.fd is not None:
            fd, self.fd = self.fd, None
            try:
                self.ops.close(fd)
            except OSError as exc:
                log.warning("closing %s reported %s (its data was fsynced before)", self.path, exc)


def _write_error(what: str, path: Path, exc: OSError) -> WalWriteError:
    hint = {
        errno.ENOSPC: "the disk is full: free space on it",
        errno.EDQUOT: "the disk quota is exhausted: raise it or free space",
        errno.EIO: "the disk reported an I/O error: check the device (dmesg)",
        errno.EROFS: "the file system is read-only: remount it read-write",
    }.get(exc.errno or 0, "check the disk and permissions")
    return WalWriteError(f"{what} failed on {path}: {exc.strerror or exc} ({hint})")
