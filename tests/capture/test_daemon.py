"""The daemon in-process against the fake exchange: sources, sharding, WAL, status."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import json
import logging
import socket
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from capture.config import Config
from capture.daemon import Daemon
from capture.errors import ConfigError, StatusError, WalDiedError
from capture.notify import Notifier
from capture.status import STATUS_NAME, read_status
from tests.capture.daemon_fixtures import FAST, Runner
from tests.capture.helpers import CutShortGamma, HungGamma, frames_by_conn, wait_for, wal_records
from tests.fakes.exchange import FakeExchange
from tests.timeouts import TIMEOUT_S
from wal import FileOps, records


async def test_graceful_run_wal_frames_equal_what_the_fake_sent(tmp_path, exchange, run_daemon):
    runner = run_daemon(assets=tuple(exchange.tokens()), max_assets_per_conn=4)
    await wait_for(lambda: runner.conns_up() == 3)
    await wait_for(lambda: all(c.stats.frames > 20 for c in runner.daemon.connections.values()))
    await runner.stop()
    records = wal_records(tmp_path / "wal")
    assert records[-1]["type"] == "seal"
    wal_frames = frames_by_conn(records)
    first_sent = {r["conn"]: r["text"] for r in reversed(records) if r["type"] == "sent"}
    assert len(wal_frames) == 3
    for fake_id, received in exchange.received.items():
        conn = next(c for c, text in first_sent.items() if text == received[0])
        sent = exchange.sent[fake_id]
        # every frame the fake sent before it saw our close frame, in order: the receive
        # loop goes on until the server closes, it is not cancelled at the stop
        assert wal_frames[conn] == sent


async def test_new_market_event_subscribes_its_assets_at_once_when_following(exchange, run_daemon):
    runner = run_daemon(assets=tuple(exchange.tokens()[:2]), follow_new_markets=True)
    await wait_for(lambda: runner.conns_up() == 1)
    tokens = exchange.announce_market()
    await wait_for(lambda: set(tokens) <= set(runner.daemon.shards.owner))
    await wait_for(lambda: any(set(tokens) <= set(c.assets) for c in exchange.conns.values()))


async def test_discovery_subscribes_new_markets_and_unsubscribes_closed_ones(exchange, run_daemon):
    runner = run_daemon(discover=True, discover_interval_s=0.3, max_assets_per_conn=6)
    await wait_for(lambda: len(runner.daemon.shards.owner) == 10)
    assert runner.daemon.connections.keys() == {0, 1}
    closed = exchange.tokens()[0]
    market_tokens = exchange.universe.by_token[closed].tokens
    exchange.close_market(closed)
    exchange.universe.add_markets(1)
    new = exchange.tokens()[-2:]
    await wait_for(lambda: set(new) <= set(runner.daemon.shards.owner))
    await wait_for(lambda: not set(market_tokens) & set(runner.daemon.shards.owner))
    await wait_for(
        lambda: all(t not in c.assets for c in exchange.conns.values() for t in market_tokens)
    )
    assert len(runner.daemon.connections) == 2  # the freed room took the new tokens


async def test_assets_file_reload_subscribes_and_unsubscribes(tmp_path, exchange, run_daemon):
    tokens = exchange.tokens()
    path = tmp_path / "assets.txt"
    path.write_text("\n".join(tokens[:3]) + "\n")
    runner = run_daemon(assets_file=path)
    await wait_for(lambda: runner.conns_up() == 1)
    path.write_text("# fewer and more\n" + "\n".join(tokens[2:5]) + "\n")
    runner.daemon.reload()
    await wait_for(lambda: set(exchange.conns[0].assets) == set(tokens[2:5]))
    path.write_text("not a token\n")
    runner.daemon.reload()  # a bad file keeps the previous list
    assert set(runner.daemon.shards.owner) == set(tokens[2:5])


class FullDisk(FileOps):
    """Every data write fails with ENOSPC while ``full`` is set."""

    def __init__(self) -> None:
        self.full = False

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        super().pwrite(fd, data, offset)


async def test_a_wal_disk_error_does_not_stop_receiving_and_is_reported(
    tmp_path, exchange, run_daemon
):
    disk = FullDisk()
    runner = run_daemon(ops=disk, assets=tuple(exchange.tokens()[:4]))
    await wait_for(lambda: runner.conns_up() == 1)
    disk.full = True
    before = runner.daemon.connections[0].stats.frames
    await wait_for(lambda: runner.daemon.writer.stats.write_errors > 0)
    await wait_for(lambda: runner.daemon.connections[0].stats.frames > before + 20)
    assert runner.conns_up() == 1
    status_file = tmp_path / "wal" / STATUS_NAME
    await wait_for(
        lambda: "No space" in (json.loads(status_file.read_text())["wal"]["last_error"] or "")
    )
    disk.full = False
    await runner.stop()
    frames = frames_by_conn(wal_records(tmp_path / "wal"))[0]
    assert frames == exchange.sent[0][: len(frames)]  # nothing lost while the disk was full
    assert len(frames) > before + 20


async def test_status_file_describes_the_connections(tmp_path, exchange, run_daemon):
    runner = run_daemon(assets=tuple(exchange.tokens()), max_assets_per_conn=5)
    await wait_for(lambda: runner.conns_up() == 2)
    path = tmp_path / "wal" / STATUS_NAME
    read: Callable[[], dict] = lambda: json.loads(path.read_text())  # noqa: E731
    await wait_for(lambda: read()["connections_up"] == 2 and read()["frames"] > 0)
    doc = read()
    assert doc["assets"] == 10 and doc["state"] == "running"
    assert [c["assets"] for c in doc["connections"]] == [5, 5]
    assert doc["wal"]["current_segment"].endswith(".open")
    await runner.stop()
    assert read()["state"] == "stopped"


async def test_metrics_are_served(exchange, run_daemon, unused_tcp_port):
    runner = run_daemon(
        assets=tuple(exchange.tokens()[:2]), metrics_addr=("127.0.0.1", unused_tcp_port)
    )
    await wait_for(lambda: runner.conns_up() == 1 and runner.daemon.metrics is not None)
    await wait_for(lambda: runner.daemon.writer.stats.durable > 3)
    url = f"http://127.0.0.1:{unused_tcp_port}/metrics"

    def scrape() -> str:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            return response.read().decode()

    text = await asyncio.to_thread(scrape)
    for name in (
        'capture_frames_total{conn="0"}',
        "capture_received_bytes_total",
        "capture_connections_up 1.0",
        "capture_last_frame_age_seconds",
        "capture_wal_fsync_seconds_bucket",
        "capture_wal_dropped_total",
        "capture_wal_segments_sealed_total",
        "capture_discovery_refused_total 0.0",
    ):
        assert name in text, name


async def test_1000_assets_become_5_connections_of_200_on_the_wire(tmp_path):
    async with FakeExchange(assets=1000, rate=2, seed=9, ping_timeout=2.0) as ex:
        tokens = ex.tokens()
        config = Config(wal_dir=tmp_path / "wal", assets=tuple(tokens), url=ex.ws_url, timing=FAST)
        runner = Runner(Daemon(config, signals=False))
        try:
            await wait_for(
                lambda: len(ex.conns) == 5 and all(len(c.assets) == 200 for c in ex.conns.values())
            )
            on_wire = [a for c in ex.conns.values() for a in c.assets]
            assert sorted(on_wire) == sorted(tokens)  # each asset on exactly one connection
            firsts = [json.loads(ex.received[i][0]) for i in range(5)]
            assert all(f["type"] == "market" and len(f["assets_ids"]) == 200 for f in firsts)
        finally:
            await runner.stop()


# ----- Gamma failures never end discovery -----


async def test_a_gamma_body_cut_short_is_logged_and_retried(exchange, run_daemon, caplog):
    caplog.set_level(logging.INFO, logger="capture")
    async with CutShortGamma() as gamma:
        runner = run_daemon(
            assets=tuple(exchange.tokens()[:2]),
            discover=True,
            gamma_url=gamma.url,
            discover_interval_s=0.05,  # a failure is retried after min(interval, 30 s)
        )
        await wait_for(lambda: gamma.requests >= 3)  # still refreshing after failures
        await wait_for(lambda: runner.conns_up() == 1)
        assert not runner.task.done()
        assert runner.daemon.status()["state"] == "running"
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert any("IncompleteRead" in m and "keeping the previous list" in m for m in errors)
        assert any("discovery: retrying" in r.getMessage() for r in caplog.records)
        assert set(runner.daemon.shards.owner) == set(exchange.tokens()[:2])


class BuggyDiscovery(Daemon):
    """A refresh that fails with an error nobody foresaw, once."""

    failed = False

    async def refresh_discovery(self) -> bool:
        if not self.failed:
            self.failed = True
            raise RuntimeError("unforeseen")
        return await super().refresh_discovery()


async def test_an_unexpected_discovery_error_is_logged_with_traceback_and_retried(
    tmp_path, exchange, caplog
):
    config = Config(
        wal_dir=tmp_path / "wal",
        discover=True,
        gamma_url=exchange.gamma_url,
        url=exchange.ws_url,
        discover_interval_s=0.05,
        timing=FAST,
    )
    runner = Runner(BuggyDiscovery(config, signals=False))
    try:
        await wait_for(lambda: len(runner.daemon.shards.owner) == 10)  # the retry worked
        failed = [r for r in caplog.records if "discovery failed unexpectedly" in r.getMessage()]
        assert len(failed) == 1 and failed[0].exc_info is not None
        assert "unforeseen" in caplog.text
    finally:
        await runner.stop()


# ----- READY does not wait for a slow Gamma -----


class ListeningSocket:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.got: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.got.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.got


@pytest.fixture
def notify_socket(tmp_path) -> Iterator[tuple[Path, ListeningSocket]]:
    path = tmp_path / "notify.sock"
    listener = ListeningSocket(path)
    try:
        yield path, listener
    finally:
        listener.sock.close()


async def test_ready_with_only_discover_and_a_hung_gamma_after_the_bounded_wait(
    exchange, run_daemon, notify_socket
):
    path, listener = notify_socket
    async with HungGamma() as gamma:
        runner = run_daemon(
            discover=True,
            gamma_url=gamma.url,
            timing=dataclasses.replace(FAST, ready_wait_s=0.2),
            notifier=Notifier({"NOTIFY_SOCKET": str(path)}),
        )
        await wait_for(lambda: any(m.startswith("READY=1") for m in listener.drain()))
        assert gamma.requests == 1 and not runner.daemon._first_discovery.is_set()
        await gamma.release()  # the listing fails now; discovery goes on, nothing breaks
        await wait_for(runner.daemon._first_discovery.is_set)
        assert not runner.task.done()
        await runner.stop()


# ----- a dead WAL writer: exit 1 for systemd to restart us -----


class BrokenWrites(FileOps):
    """Once ``broken`` is set, a data write fails with an error no disk gives: the WAL
    writer thread dies of it (the "unexpected exception" case)."""

    def __init__(self) -> None:
        self.broken = False

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        if self.broken:
            raise RuntimeError("injected bug in the write path")
        super().pwrite(fd, data, offset)


class RecordingNotifier(Notifier):
    """A real notifier that also notes, for each message, whether the daemon had failed."""

    def __init__(self) -> None:
        super().__init__({"WATCHDOG_USEC": "100000"})  # pings every 0.05 s
        self.daemon: Daemon | None = None
        self.sent: list[tuple[str, bool]] = []

    def send(self, *fields: str) -> None:
        assert self.daemon is not None
        self.sent.append((fields[0], self.daemon.fatal is not None))
        super().send(*fields)


async def _dies(runner: Runner, caplog) -> None:
    with pytest.raises(WalDiedError, match="RuntimeError: injected bug"):
        await asyncio.wait_for(runner.task, TIMEOUT_S)
    critical = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert any(
        m.startswith("WAL writer died: RuntimeError: injected bug")
        and "exiting so that systemd restarts capture and recovery seals the open segment" in m
        for m in critical
    ), critical


async def test_a_dead_wal_writer_seen_while_receiving_exits_1(
    tmp_path, exchange, run_daemon, caplog
):
    ops, notifier = BrokenWrites(), RecordingNotifier()
    runner = run_daemon(ops=ops, notifier=notifier, assets=tuple(exchange.tokens()[:4]))
    notifier.daemon = runner.daemon
    await wait_for(lambda: runner.conns_up() == 1 and runner.daemon.writer.stats.durable > 5)
    await wait_for(lambda: sum(m == "WATCHDOG=1" for m, _ in notifier.sent) >= 2)
    ops.broken = True
    await _dies(runner, caplog)
    assert runner.daemon.connections[0].stats.state == "stopped"
    assert ("WATCHDOG=1", True) not in notifier.sent  # no pings once the writer died
    doc = json.loads((tmp_path / "wal" / STATUS_NAME).read_text())
    assert doc["state"] == "failed"
    assert doc["wal"]["fatal_error"].startswith("RuntimeError: injected bug")
    with pytest.raises(StatusError, match="WAL writer died: RuntimeError"):
        read_status(tmp_path / "wal", doc["updated_ns"])


async def test_a_dead_wal_writer_seen_by_the_status_loop_exits_1(
    tmp_path, exchange, run_daemon, caplog
):
    empty = tmp_path / "assets.txt"
    empty.write_text("# nothing yet\n")
    ops, notifier = BrokenWrites(), RecordingNotifier()
    runner = run_daemon(ops=ops, notifier=notifier, assets_file=empty)  # nothing received
    notifier.daemon = runner.daemon
    await wait_for(lambda: runner.daemon.status()["state"] == "running")
    ops.broken = True
    runner.daemon.writer.append(records.sent(1, 0, "x"))  # the thread dies writing it
    await _dies(runner, caplog)
    assert ("WATCHDOG=1", True) not in notifier.sent
    assert json.loads((tmp_path / "wal" / STATUS_NAME).read_text())["state"] == "failed"


# ----- the WAL buffer holds any message accepted -----


async def test_messages_up_to_half_the_buffer_are_kept_larger_ones_refused(
    tmp_path, exchange, run_daemon, caplog
):
    caplog.set_level(logging.INFO, logger="capture")
    runner = run_daemon(assets=tuple(exchange.tokens()[:2]), max_buffer_bytes=32 << 20)
    await wait_for(lambda: runner.conns_up() == 1)
    assert "messages larger than 16 MiB are refused" in caplog.text
    big = '{"event_type": "book", "pad": "' + "x" * (15 << 20) + '"}'
    await exchange.send_text(big)
    await wait_for(lambda: any(len(m) > 15 << 20 for m in _frames(tmp_path)))
    assert runner.daemon.writer.stats.dropped_total == 0
    await exchange.send_text("y" * ((16 << 20) + 1))  # over the limit: the socket is closed
    await wait_for(lambda: runner.daemon.connections[0].stats.reconnects["connection_lost"] > 0)
    await runner.stop()
    closes = [r for r in wal_records(tmp_path / "wal") if r["type"] == "conn_close"]
    assert "message too big" in closes[0]["error"]
    assert runner.daemon.writer.stats.dropped_total == 0


def _frames(tmp_path: Path) -> list[str | bytes]:
    return [m for frames in frames_by_conn(wal_records(tmp_path / "wal")).values() for m in frames]


def test_a_buffer_smaller_than_two_messages_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="use --max-buffer-mb 32 or more"):
        Config(wal_dir=tmp_path, max_buffer_bytes=8 << 20)
    assert Config(wal_dir=tmp_path, max_buffer_bytes=32 << 20).max_frame_bytes == 16 << 20
    assert Config(wal_dir=tmp_path, max_buffer_bytes=100 << 20).max_frame_bytes == 50 << 20
    assert Config(wal_dir=tmp_path).max_frame_bytes == 64 << 20
