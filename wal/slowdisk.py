"""Test-only: a slow or stalled disk for a writer running in a real process.

Set in the environment of a test's process, never in production (a warning is logged
when they are on): each fdatasync of the writer thread first sleeps
``WAL_TEST_FDATASYNC_DELAY_S`` seconds, then waits while the file named by
``WAL_TEST_FDATASYNC_STALL_FILE`` exists. Start-up (recovery, the first header) runs on
another thread and is not slowed.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from wal.fsutil import REAL_OPS, FileOps

log = logging.getLogger(__name__)

WRITER_THREAD = "wal-writer"  # the name WalWriter gives its thread
SLOW_FSYNC_ENV = "WAL_TEST_FDATASYNC_DELAY_S"
STALL_FILE_ENV = "WAL_TEST_FDATASYNC_STALL_FILE"
STALL_POLL_S = 0.05  # how often a stalled fdatasync looks for its file


class SlowDiskOps(FileOps):
    """The writer thread's fdatasyncs are slow, or wait while a file exists.
    Other threads are not slowed."""

    def __init__(self, delay_s: float, stall_file: str | None) -> None:
        self.delay_s = delay_s
        self.stall_file = stall_file

    def fdatasync(self, fd: int) -> None:
        if threading.current_thread().name == WRITER_THREAD:
            time.sleep(self.delay_s)
            while self.stall_file and os.path.exists(self.stall_file):
                time.sleep(STALL_POLL_S)
        super().fdatasync(fd)


def _test_ops(ops: FileOps) -> FileOps:
    delay, stall = os.environ.get(SLOW_FSYNC_ENV), os.environ.get(STALL_FILE_ENV)
    if ops is REAL_OPS and (delay or stall):
        log.warning(
            "test hook: slow disk (%s=%s, %s=%s)", SLOW_FSYNC_ENV, delay, STALL_FILE_ENV, stall
        )
        return SlowDiskOps(float(delay or 0), stall)
    return ops


def from_env(ops: FileOps) -> FileOps:
    """``ops``, or a slow disk over the real one when a test asked for it."""
    delay, stall = os.environ.get(SLOW_FSYNC_ENV), os.environ.get(STALL_FILE_ENV)
    if ops is not REAL_OPS or not (delay or stall):
        return ops
    log.warning("test hook: slow disk (%s=%s, %s=%s)", SLOW_FSYNC_ENV, delay, STALL_FILE_ENV, stall)
    return SlowDiskOps(float(delay or 0), stall)
