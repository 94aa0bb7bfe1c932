"""File operations behind one small seam, and the one durable-write helper.

Everything the writer does to the disk goes through ``FileOps``, so tests can put a
layer that fails with ENOSPC or EIO in its place (a fake, not a mock).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


class FileOps:
    """The real file layer (os calls). Subclass and override to inject faults."""

    def create(self, path: Path) -> int:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)

    def open_existing(self, path: Path) -> int:
        return os.open(path, os.O_WRONLY | os.O_CLOEXEC)

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(fd, view, offset)
            view = view[written:]
            offset += written

    def fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def ftruncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def close(self, fd: int) -> None:
        os.close(fd)

    def rename(self, src: Path, dst: Path) -> None:
        os.rename(src, dst)

    def fsync_dir(self, directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


REAL_OPS = FileOps()


def durable_replace(src: Path, dst: Path, ops: FileOps = REAL_OPS) -> None:
    """Rename ``src`` (already fsynced) over ``dst`` and fsync the directory."""
    ops.rename(src, dst)
    ops.fsync_dir(dst.parent)


def write_durably(path: Path | str, data: bytes, ops: FileOps = REAL_OPS) -> None:
    """Write ``data`` to ``path`` atomically: temp file, fsync, rename, fsync dir.

    Readers see the old content or the new one, never a mix, even across a crash.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = ops.create(tmp)
    try:
        ops.pwrite(fd, data, 0)
        ops.fsync(fd)
    finally:
        ops.close(fd)
    durable_replace(tmp, path, ops)
