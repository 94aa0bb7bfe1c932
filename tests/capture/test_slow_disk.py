"""``capture run`` as a real process on a slow or stalled disk (the writer's test-only
hooks, ``wal.slowdisk``): a graceful stop within ``--stop-timeout``, and the memory bound."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from capture.status import STATUS_NAME
from tests.capture.helpers import FloodServer, frames_by_conn, wait_for, wal_records
from tests.capture.test_cli import Proc, start
from tests.fakes.exchange import FakeExchange
from tests.timeouts import TIMEOUT_S, scaled
from wal.naming import LOCK_NAME
from wal.slowdisk import SLOW_FSYNC_ENV, STALL_FILE_ENV

SLOW_FSYNC_S = 1.0  # per fdatasync: a backlog of a few batches outlasts the old 2 s seal
BOUND_MB = 32  # the smallest --max-buffer-mb, so that filling it is quick
BOUND_GOAL = 1.2  # RSS growth / --max-buffer-mb
MiB = 1 << 20


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.kill()


@pytest.fixture
async def exchange() -> AsyncIterator[FakeExchange]:
    async with FakeExchange(assets=4, rate=400, seed=12, ping_timeout=TIMEOUT_S) as ex:
        yield ex


def slow_disk(delay_s: float) -> dict[str, str]:
    return {SLOW_FSYNC_ENV: str(delay_s)}


def capture_args(exchange: FakeExchange, *more: str) -> list[str]:
    return ["--url", exchange.ws_url, *[f"--asset={t}" for t in exchange.tokens()], *more]


def lock_is_free(wal_dir: Path) -> bool:
    fd = os.open(wal_dir / LOCK_NAME, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def alive(pid: int) -> bool:
    """Running and not yet a zombie (a zombie's files, the lock too, are closed)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def vm_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} for {pid}")


async def test_sigterm_on_a_slow_disk_writes_the_whole_backlog_within_the_stop_timeout(
    tmp_path, exchange, procs
):
    wal_dir = tmp_path / "wal"
    proc = start(procs, wal_dir, capture_args(exchange), env=slow_disk(SLOW_FSYNC_S))
    await wait_for(lambda: proc.frames() > 400)
    proc.popen.send_signal(signal.SIGTERM)
    await wait_for(lambda: proc.popen.poll() is not None, scaled(12.0 + 3))
    assert proc.popen.returncode == 0, proc.logs()
    records = wal_records(wal_dir)
    assert records[-1]["type"] == "seal"
    got = frames_by_conn(records)[0]
    assert got == exchange.sent[0] and len(got) > 400  # the backlog too, none lost
    assert "CRITICAL" not in proc.logs()


async def test_a_stop_timeout_too_short_exits_1_counting_the_lost_and_keeps_the_lock(
    tmp_path, exchange, procs
):
    wal_dir = tmp_path / "wal"
    args = capture_args(exchange, "--stop-timeout", "1")
    proc = start(procs, wal_dir, args, env=slow_disk(3 * SLOW_FSYNC_S))
    await wait_for(lambda: proc.frames() > 400)
    proc.popen.send_signal(signal.SIGTERM)
    while alive(proc.popen.pid):  # the writer thread sleeps in fdatasync until the exit
        assert not lock_is_free(wal_dir), "WAL lock released while the process lives"
        await asyncio.sleep(0.02)
    assert proc.popen.wait(TIMEOUT_S) == 1, proc.logs()
    logs = [json.loads(line) for line in proc.logs().splitlines() if line.startswith("{")]
    critical = [e["msg"] for e in logs if e["level"].upper() == "CRITICAL"]
    assert len(critical) == 1 and "records were not written" in critical[0], proc.logs()
    lost = int(critical[0].split(": ", 1)[1].split()[0])
    assert lost > 0
    written = len(frames_by_conn(wal_records(wal_dir)).get(0, []))
    assert 0 < len(exchange.sent[0]) - written <= lost  # the loss is counted, not hidden
    assert lock_is_free(wal_dir)


@pytest.mark.parametrize("payload", ["PONG", "x" * 2000], ids=["pong_sized", "2kb"])
async def test_a_stalled_disk_holds_rss_growth_to_the_buffer_bound_and_records_drops(
    tmp_path, procs, payload
):
    wal_dir = tmp_path / "wal"
    stall = tmp_path / "stall"
    stall.touch()
    async with FloodServer(payload) as server:
        args = ["--url", server.url, "--asset", "1", "--max-buffer-mb", str(BOUND_MB)]
        args += ["--silence-timeout", str(TIMEOUT_S * 10), "--pong-timeout", str(TIMEOUT_S * 10)]
        proc = start(procs, wal_dir, args, env={STALL_FILE_ENV: str(stall)})
        await asyncio.wait_for(server.connected.wait(), TIMEOUT_S)
        await wait_for(lambda: proc.status().get("connections_up") == 1)
        before = vm_kib(proc.popen.pid, "VmRSS")
        server.go.set()
        dropping = lambda: proc.status().get("wal", {}).get("dropped_total", 0) > 1000  # noqa: E731
        await wait_for(dropping, scaled(30))
        await asyncio.sleep(0.5)  # frames keep coming and being dropped: memory stays put
        peak = max(vm_kib(proc.popen.pid, "VmRSS"), vm_kib(proc.popen.pid, "VmHWM"))
        server.stop()
        growth = (peak - before) / 1024
        assert growth <= BOUND_GOAL * BOUND_MB, f"RSS grew {growth:.1f} MiB"
        stall.unlink()  # the disk is back: the backlog and the drops are written
        proc.popen.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.popen.wait, scaled(15)) == 0, proc.logs()
    final = json.loads((wal_dir / STATUS_NAME).read_text())
    records = wal_records(wal_dir)
    dropped = [r["count"] for r in records if r["type"] == "dropped"]
    assert dropped and sum(dropped) == final["wal"]["dropped_total"]
    frames = [r["n"] for r in records if r["type"] == "frame"]
    assert len(frames) + sum(dropped) >= frames[-1] + 1  # every gap in n is a counted drop
