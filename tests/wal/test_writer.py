import errno
import threading
import time

import pytest

from tests.timeouts import TIMEOUT_S
from tests.wal.helpers import frames_in, read_all, sample_frames
from wal import FileOps, Policy, WalClosedError, WalFatalError, WalLockedError, WalWriter, records
from wal.naming import list_segments


class FaultyOps(FileOps):
    """A file layer that fails on demand: half-writes then ENOSPC, or EIO on fsync."""

    def __init__(self) -> None:
        self.write_errno: int | None = None
        self.fsync_errno: int | None = None
        self.failures = 0

    def pwrite(self, fd, data, offset):
        if self.write_errno is not None:
            self.failures += 1
            super().pwrite(fd, data[: len(data) // 2], offset)  # a torn write, then the error
            raise OSError(self.write_errno, "injected")
        super().pwrite(fd, data, offset)

    def fdatasync(self, fd):
        if self.fsync_errno is not None:
            self.failures += 1
            raise OSError(self.fsync_errno, "injected")
        super().fdatasync(fd)


def _wait(predicate, what):
    deadline = time.monotonic() + TIMEOUT_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_records_are_durable_in_order_across_rotations(tmp_path):
    writer = WalWriter.open(
        tmp_path, Policy(flush_ms=1, batch_bytes=4096, rotate_s=3600, rotate_bytes=2000)
    )
    recs = sample_frames(3000)
    for r in recs:
        writer.append(r)
    assert writer.close(TIMEOUT_S)
    assert writer.stats.segments_sealed > 3
    assert frames_in(tmp_path) == recs
    assert not any(n.is_open for n, _ in list_segments(tmp_path))


def test_rotation_by_time_seals_even_an_idle_segment(tmp_path):
    writer = WalWriter.open(tmp_path, Policy(flush_ms=1, rotate_s=0.05))
    writer.append(sample_frames(1)[0])
    _wait(lambda: writer.stats.segments_sealed >= 3, "time rotations")
    assert writer.close(TIMEOUT_S)
    assert len(frames_in(tmp_path)) == 1


def test_wait_durable_returns_once_fsynced(tmp_path):
    writer = WalWriter.open(tmp_path, Policy(flush_ms=20))
    n = writer.append(sample_frames(1)[0])
    assert writer.wait_durable(n, TIMEOUT_S)
    assert writer.stats.durable >= n
    assert writer.close(TIMEOUT_S)


def test_second_writer_on_a_directory_fails_clearly(tmp_path):
    first = WalWriter.open(tmp_path)
    with pytest.raises(WalLockedError, match=r"locked by another writer \(pid"):
        WalWriter.open(tmp_path)
    assert first.close(TIMEOUT_S)
    WalWriter.open(tmp_path).close(TIMEOUT_S)  # free again once the first is gone


def test_append_after_close_raises(tmp_path):
    writer = WalWriter.open(tmp_path)
    writer.close(TIMEOUT_S)
    with pytest.raises(WalClosedError):
        writer.append(sample_frames(1)[0])


@pytest.mark.parametrize("where", ["write", "fsync"])
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_disk_errors_are_reported_retried_and_lose_nothing(tmp_path, where, code):
    ops = FaultyOps()
    writer = WalWriter.open(tmp_path, Policy(flush_ms=1, rotate_s=0.2), ops=ops)
    recs = sample_frames(400)
    for r in recs[:100]:
        writer.append(r)
    assert writer.flush(TIMEOUT_S)
    setattr(ops, f"{where}_errno", code)
    for r in recs[100:300]:
        writer.append(r)
    _wait(lambda: ops.failures >= 3, "failing writes")
    assert writer.stats.last_error is not None
    assert ("disk is full" if code == errno.ENOSPC else "I/O error") in writer.stats.last_error
    assert writer.stats.durable < writer.stats.appended  # kept in memory, not lost
    setattr(ops, f"{where}_errno", None)
    for r in recs[300:]:
        writer.append(r)
    assert writer.close(TIMEOUT_S)
    assert writer.stats.last_error is None
    assert frames_in(tmp_path) == recs
    for _, path in list_segments(tmp_path):
        read_all(path)  # every sealed segment is intact: no partial frame stayed


def test_full_buffer_drops_and_records_how_many(tmp_path):
    ops = FaultyOps()
    policy = Policy(flush_ms=1, batch_bytes=4096, max_buffer_bytes=8192)
    writer = WalWriter.open(tmp_path, policy, ops=ops)
    ops.write_errno = errno.ENOSPC
    accepted, dropped = [], 0
    for r in sample_frames(1000):
        if writer.append(r):
            accepted.append(r)
        else:
            dropped += 1
        assert writer.stats.buffered_bytes <= policy.max_buffer_bytes
    assert dropped > 0 and writer.stats.dropped_total == dropped
    ops.write_errno = None
    last = records.frame(1, 9, 0, "after")
    _wait(lambda: writer.append(last) > 0 or False, "room in the buffer")
    assert writer.close(TIMEOUT_S)
    all_records = [r for _, p in list_segments(tmp_path) for r in read_all(p)]
    drops = [r for r in all_records if r["type"] == "dropped"]
    assert sum(d["count"] for d in drops) == writer.stats.dropped_total
    assert drops[0]["reason"] == "buffer_full"
    frames = [r for r in all_records if r["type"] == "frame"]
    assert frames[: len(accepted)] == accepted and frames[-1] == last


def test_close_gives_up_after_timeout_when_disk_never_recovers(tmp_path):
    ops = FaultyOps()
    writer = WalWriter.open(tmp_path, Policy(flush_ms=1), ops=ops)
    ops.fsync_errno = errno.EIO
    writer.append(sample_frames(1)[0])
    started = time.monotonic()
    assert writer.close(0.5) is False
    assert time.monotonic() - started < TIMEOUT_S
    # the lock is released, and the next writer recovers the open segment
    ops.fsync_errno = None
    again = WalWriter.open(tmp_path)
    assert len(again.stats.recovered) == 1
    assert again.close(TIMEOUT_S)


def test_append_is_safe_from_many_threads(tmp_path):
    writer = WalWriter.open(tmp_path, Policy(flush_ms=1))

    def produce(conn):
        for r in sample_frames(500, conn=conn):
            writer.append(r)

    threads = [threading.Thread(target=produce, args=(c,)) for c in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert writer.close(TIMEOUT_S)
    frames = frames_in(tmp_path)
    for conn in range(4):
        assert [f for f in frames if f["conn"] == conn] == sample_frames(500, conn=conn)


class DirSyncFailsOnceAfterRename(FileOps):
    def __init__(self) -> None:
        self.renamed = False
        self.failed = False

    def rename(self, src, dst):
        super().rename(src, dst)
        self.renamed = True

    def fsync_dir(self, directory):
        if self.renamed and not self.failed:
            self.failed = True
            raise OSError(errno.EIO, "injected")
        super().fsync_dir(directory)


def test_a_failed_directory_fsync_after_the_rename_is_retried_not_fatal(tmp_path):
    ops = DirSyncFailsOnceAfterRename()
    writer = WalWriter.open(tmp_path, Policy(flush_ms=1, rotate_s=0.05), ops=ops)
    _wait(lambda: ops.failed, "the injected failure")
    n = writer.append(sample_frames(1)[0])
    assert writer.wait_durable(n, TIMEOUT_S)
    assert writer.close(TIMEOUT_S)
    assert len(frames_in(tmp_path)) == 1


class CloseFailsOnce(FileOps):
    failed = False

    def close(self, fd):
        super().close(fd)
        if not self.failed:
            self.failed = True
            raise OSError(errno.EIO, "injected")


def test_an_error_from_close_is_logged_not_fatal(tmp_path):
    ops = CloseFailsOnce()
    writer = WalWriter.open(tmp_path, Policy(flush_ms=1, rotate_s=0.05), ops=ops)
    _wait(lambda: writer.stats.segments_sealed >= 2, "rotations")
    assert writer.fatal_error is None
    writer.append(sample_frames(1)[0])
    assert writer.close(TIMEOUT_S)


class Buggy(FileOps):
    broken = False

    def pwrite(self, fd, data, offset):
        if self.broken:
            raise RuntimeError("a bug in the file layer")
        super().pwrite(fd, data, offset)


def test_writer_thread_death_is_reported_never_silent(tmp_path, caplog):
    ops = Buggy()
    writer = WalWriter.open(tmp_path, Policy(flush_ms=1), ops=ops)
    ops.broken = True
    n = writer.append(sample_frames(1)[0])
    assert not writer.wait_durable(n, TIMEOUT_S)  # returns as soon as the thread died
    assert writer.fatal_error == "RuntimeError: a bug in the file layer"
    with pytest.raises(WalFatalError, match="restart the process"):
        writer.append(sample_frames(1)[0])
    assert writer.close(TIMEOUT_S) is False
    assert "WAL writer thread died" in caplog.text
    WalWriter.open(tmp_path).close(TIMEOUT_S)  # the next start recovers the open segment


def test_drops_are_recorded_even_when_no_append_follows(tmp_path):
    ops = FaultyOps()
    policy = Policy(flush_ms=1, batch_bytes=4096, max_buffer_bytes=8192)
    writer = WalWriter.open(tmp_path, policy, ops=ops)
    ops.fsync_errno = errno.ENOSPC
    for r in sample_frames(500):
        writer.append(r)
    assert writer.stats.dropped_total > 0
    ops.fsync_errno = None
    assert writer.close(TIMEOUT_S)  # no append after the disk recovered
    drops = [r for _, p in list_segments(tmp_path) for r in read_all(p) if r["type"] == "dropped"]
    assert sum(d["count"] for d in drops) == writer.stats.dropped_total


def test_sequence_continues_after_every_segment_was_pruned(tmp_path):
    writer = WalWriter.open(tmp_path, Policy(flush_ms=1, rotate_s=0.05))
    _wait(lambda: writer.stats.segments_sealed >= 3, "rotations")
    assert writer.close(TIMEOUT_S)
    highest = max(n.seq for n, _ in list_segments(tmp_path))
    for _, path in list_segments(tmp_path):
        path.unlink()  # an operator pruned everything that was loaded
    again = WalWriter.open(tmp_path)
    assert again.close(TIMEOUT_S)
    assert [n.seq for n, _ in list_segments(tmp_path)] == [highest + 1]


def test_close_tries_at_once_even_after_a_long_backoff(tmp_path):
    ops = FaultyOps()
    writer = WalWriter.open(tmp_path, Policy(flush_ms=1), ops=ops)
    ops.write_errno = errno.ENOSPC
    recs = sample_frames(100)
    for r in recs:
        writer.append(r)
    _wait(lambda: ops.failures >= 5, "the backoff to grow past a second")
    ops.write_errno = None  # the disk recovers while the writer sleeps
    assert writer.close(1.0)  # shorter than the pending retry delay
    assert frames_in(tmp_path) == recs
