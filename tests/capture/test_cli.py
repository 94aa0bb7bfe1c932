"""The ``capture`` command: usage errors with CliRunner, the daemon as a real process."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from capture.cli import main
from capture.status import STATUS_NAME
from tests.capture.helpers import DeafServer, HungGamma, frames_by_conn, wait_for, wal_records
from tests.fakes.exchange import FakeExchange
from tests.timeouts import TIMEOUT_S, scaled
from wal import list_segments
from wal.naming import OPEN_SUFFIX

ROOT = Path(__file__).resolve().parents[2]

FAST_OPTS = [
    "--ping-interval",
    "0.2",
    "--pong-timeout",
    "3",
    "--backoff-initial",
    "0.05",
    "--backoff-max",
    "0.2",
    "--open-spacing",
    "0.01",
    "--status-interval",
    "0.2",
    "--flush-ms",
    "20",
    "--log-format",
    "json",
]


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--wal-dir", "w"],  # no asset source
        ["run", "--wal-dir", "w", "--asset", "1", "--max-assets-per-conn", "501"],
        ["run", "--wal-dir", "w", "--asset", "1", "--metrics-addr", "nope"],
        ["run", "--wal-dir", "w", "--asset", "1", "--url", "http://x/"],
        ["run", "--wal-dir", "w", "--asset", "1", "--log-format", "xml"],
        ["run", "--wal-dir", "w", "--asset", "1", "--redundancy", "4"],
        ["run", "--wal-dir", "w", "--asset", "1", "--redundancy", "0"],
        ["run", "--asset", "1"],  # no --wal-dir
        ["status"],
        ["nosuch"],
    ],
)
def test_usage_errors_exit_2_without_traceback(tmp_path, args):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_a_buffer_smaller_than_two_of_the_largest_messages_is_a_usage_error(tmp_path):
    args = ["run", "--wal-dir", str(tmp_path), "--asset", "1", "--max-buffer-mb", "8"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "--max-buffer-mb 8 is too small" in result.output
    assert "use --max-buffer-mb 32 or more" in result.output
    assert "Traceback" not in result.output


def test_options_come_from_capture_env_vars(tmp_path):
    env = {
        "CAPTURE_WAL_DIR": str(tmp_path),
        "CAPTURE_ASSET": "1 2",
        "CAPTURE_MAX_ASSETS_PER_CONN": "900",
    }
    result = CliRunner().invoke(main, ["run"], env=env)
    assert result.exit_code == 2
    assert "900 is not in the range" in result.output


def test_redundancy_comes_from_its_env_var(tmp_path):
    env = {"CAPTURE_WAL_DIR": str(tmp_path), "CAPTURE_ASSET": "1", "CAPTURE_REDUNDANCY": "5"}
    result = CliRunner().invoke(main, ["run"], env=env)
    assert result.exit_code == 2
    assert "5 is not in the range 1<=x<=3" in result.output


def test_status_without_a_daemon_says_so_and_exits_1(tmp_path):
    result = CliRunner().invoke(main, ["status", "--wal-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "no status file" in result.output


def test_status_of_a_stuck_daemon_says_it_is_stale(tmp_path):
    doc = {
        "pid": os.getpid(),
        "state": "running",
        "interval_s": 1.0,
        "updated_ns": time.time_ns() - 60 * 10**9,
    }
    (tmp_path / STATUS_NAME).write_text(json.dumps(doc))
    result = CliRunner().invoke(main, ["status", "--wal-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "has not updated" in result.output


def test_assets_file_errors_exit_1_with_the_line(tmp_path):
    bad = tmp_path / "a.txt"
    bad.write_text("123\nxyz\n")
    result = CliRunner().invoke(
        main, ["run", "--wal-dir", str(tmp_path / "w"), "--assets-file", str(bad)]
    )
    assert result.exit_code == 1
    assert "line 2" in result.output and "Traceback" not in result.output


# ----- the daemon as a real process -----


@pytest.fixture
async def exchange() -> AsyncIterator[FakeExchange]:
    async with FakeExchange(assets=8, rate=50, seed=11, ping_timeout=3.0) as ex:
        yield ex


class Proc:
    def __init__(self, wal_dir: Path, args: list[str], env: dict[str, str] | None = None):
        self.wal_dir = wal_dir
        self.log = wal_dir.parent / f"capture-{time.monotonic_ns()}.log"
        cmd = [sys.executable, "-m", "capture", "run", "--wal-dir", str(wal_dir), *FAST_OPTS, *args]
        with self.log.open("wb") as log:
            self.popen = subprocess.Popen(
                cmd, stdout=log, stderr=log, env={**os.environ, **(env or {})}
            )

    def status(self) -> dict:
        """This process's status document ({} until it has written one)."""
        try:
            doc = json.loads((self.wal_dir / STATUS_NAME).read_text())
        except (OSError, ValueError):
            return {}
        return doc if doc.get("pid") == self.popen.pid else {}

    def frames(self) -> int:
        return int(self.status().get("frames", 0))

    def logs(self) -> str:
        return self.log.read_text()

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(TIMEOUT_S)


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.kill()


def start(procs: list[Proc], wal_dir: Path, args: list[str], **kw) -> Proc:
    procs.append(Proc(wal_dir, args, **kw))
    return procs[-1]


async def test_sigterm_stops_reading_and_seals_within_5s(tmp_path, exchange, procs):
    wal_dir = tmp_path / "wal"
    proc = start(
        procs, wal_dir, ["--url", exchange.ws_url, *[f"--asset={t}" for t in exchange.tokens()]]
    )
    await wait_for(lambda: proc.frames() > 50)
    started = time.monotonic()
    proc.popen.send_signal(signal.SIGTERM)
    await wait_for(lambda: proc.popen.poll() is not None, scaled(5.0))
    assert time.monotonic() - started < scaled(5.0)
    assert proc.popen.returncode == 0, proc.logs()
    assert [p.name for _, p in list_segments(wal_dir) if p.name.endswith(OPEN_SUFFIX)] == []
    records = wal_records(wal_dir)
    assert records[-1]["type"] == "seal"
    assert records[-2]["type"] == "conn_close" and records[-2]["reason"] == "shutdown"
    got = frames_by_conn(records)[0]
    assert got == exchange.sent[0] and len(got) > 50  # all sent before it saw our close
    logs = [json.loads(line) for line in proc.logs().splitlines()]
    assert any("sealed" in entry["msg"] for entry in logs)
    status = CliRunner().invoke(main, ["status", "--wal-dir", str(wal_dir)])
    assert status.exit_code == 1 and "not running" in status.output


async def test_connection_opens_are_spaced_by_open_spacing(tmp_path, exchange, procs):
    spacing = 0.3
    tokens = exchange.tokens()
    args = ["--url", exchange.ws_url, "--max-assets-per-conn", "2", "--open-spacing", "0.3"]
    proc = start(procs, tmp_path / "wal", [*args, *[f"--asset={t}" for t in tokens]])
    await wait_for(lambda: proc.status().get("connections_up") == 4)
    exchange.drop_all()  # the 4 reconnects go through the same gate
    await wait_for(lambda: len(exchange.handshake_times) == 8)
    await wait_for(lambda: proc.status().get("connections_up") == 4)
    gaps = [b - a for a, b in itertools.pairwise(exchange.handshake_times)]
    # measured at the server: the client's gate spaces the starts of its connects, so
    # allow the few ms that one handshake request may take longer than the next
    assert all(gap >= spacing - 0.05 for gap in gaps), gaps


async def test_sigkill_then_restart_recovers_the_open_segment_and_goes_on(
    tmp_path, exchange, procs
):
    wal_dir = tmp_path / "wal"
    args = ["--url", exchange.ws_url, "--asset", exchange.tokens()[0]]
    first = start(procs, wal_dir, args)
    await wait_for(lambda: first.frames() > 30)
    await wait_for(lambda: first.status()["wal"]["durable"] > 30)
    first.popen.send_signal(signal.SIGKILL)
    first.popen.wait(TIMEOUT_S)
    assert [n for n, _ in list_segments(wal_dir) if n.is_open]
    second = start(procs, wal_dir, args)
    await wait_for(lambda: second.frames() > 30)
    second.popen.send_signal(signal.SIGTERM)
    assert second.popen.wait(TIMEOUT_S) == 0, second.logs()
    segments = list_segments(wal_dir)
    assert len(segments) == 2 and not any(n.is_open for n, _ in segments)
    seals = [r for r in wal_records(wal_dir) if r["type"] == "seal"]
    assert seals[0].get("recovered") is True and "recovered" not in seals[1]
    assert "recovered" in second.logs()
    sessions = [r for r in wal_records(wal_dir) if r["type"] == "conn_open"]
    assert len(sessions) == 2


async def test_sighup_rereads_the_assets_file(tmp_path, exchange, procs):
    tokens = exchange.tokens()
    assets = tmp_path / "assets.txt"
    assets.write_text(f"{tokens[0]}\n")
    proc = start(procs, tmp_path / "wal", ["--url", exchange.ws_url, "--assets-file", str(assets)])
    await wait_for(lambda: proc.frames() > 0)
    assets.write_text(f"# now two others\n{tokens[1]}\n{tokens[2]}\n")
    proc.popen.send_signal(signal.SIGHUP)
    await wait_for(lambda: exchange.conns and set(exchange.conns[0].assets) == set(tokens[1:3]))
    await wait_for(lambda: proc.status().get("assets") == 2)


async def test_a_second_daemon_on_the_same_dir_exits_1(tmp_path, exchange, procs):
    wal_dir = tmp_path / "wal"
    first = start(procs, wal_dir, ["--url", exchange.ws_url, "--asset", "1"])
    await wait_for(lambda: first.status().get("state") == "running")
    second = start(procs, wal_dir, ["--url", exchange.ws_url, "--asset", "1"])
    assert second.popen.wait(TIMEOUT_S) == 1
    assert "locked by another writer" in second.logs()
    assert "Traceback" not in second.logs()


async def test_status_command_shows_the_running_daemon(tmp_path, exchange, procs):
    wal_dir = tmp_path / "wal"
    proc = start(
        procs,
        wal_dir,
        [
            "--url",
            exchange.ws_url,
            "--max-assets-per-conn",
            "3",
            *[f"--asset={t}" for t in exchange.tokens()[:5]],
        ],
        env={"CAPTURE_LOG_LEVEL": "WARNING"},  # any case
    )
    await wait_for(lambda: proc.status().get("connections_up") == 2 and proc.frames() > 5)
    text = CliRunner().invoke(main, ["status", "--wal-dir", str(wal_dir)])
    assert text.exit_code == 0, text.output
    assert "5 assets on 2 connections (2 up)" in text.output
    doc = json.loads(
        CliRunner().invoke(main, ["status", "--wal-dir", str(wal_dir), "--json"]).output
    )
    assert [c["assets"] for c in doc["connections"]] == [3, 2]
    by_env = CliRunner().invoke(
        main, ["status"], env={"CAPTURE_WAL_DIR": str(wal_dir), "CAPTURE_JSON": "1"}
    )
    assert by_env.exit_code == 0, by_env.output
    assert json.loads(by_env.output)["pid"] == proc.popen.pid
    assert "connected, subscribing" not in proc.logs()  # INFO lines are off at WARNING


@pytest.mark.parametrize("level", ["INFO", "Debug", "warning"])
def test_log_level_is_case_insensitive(tmp_path, level):
    env = {"CAPTURE_WAL_DIR": str(tmp_path), "CAPTURE_LOG_LEVEL": level}
    result = CliRunner().invoke(main, ["run"], env=env)  # fails later: no asset source
    assert result.exit_code == 2
    assert "give assets" in result.output and "--log-level" not in result.output
    bad = CliRunner().invoke(main, ["run"], env={**env, "CAPTURE_LOG_LEVEL": "LOUD"})
    assert bad.exit_code == 2 and "Invalid value for '--log-level'" in bad.output


class NotifySocket:
    """systemd's side of NOTIFY_SOCKET: a datagram socket collecting what is sent."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.got: list[str] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.setblocking(False)

    def drain(self) -> list[str]:
        """Every message received so far."""
        while True:
            try:
                self.got.append(self._sock.recv(4096).decode())
            except BlockingIOError:
                return self.got

    def close(self) -> None:
        self._sock.close()


async def test_systemd_notify_ready_watchdog_stopping(tmp_path, exchange, procs):
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        proc = start(
            procs,
            tmp_path / "wal",
            ["--url", exchange.ws_url, "--asset", "1"],
            env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "200000"},
        )
        await wait_for(lambda: any("READY=1" in m for m in notify.drain()))
        await wait_for(lambda: sum("WATCHDOG=1" in m for m in notify.drain()) >= 3)
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.popen.wait(TIMEOUT_S) == 0
        assert any(m.startswith("STOPPING=1") for m in notify.drain())
    finally:
        notify.close()


async def test_signals_during_the_shutdown_drain_do_not_kill_it_before_the_seal(tmp_path, procs):
    wal_dir = tmp_path / "wal"
    async with DeafServer() as server:  # ignores our close: the drain lasts its full time
        proc = start(procs, wal_dir, ["--url", server.url, "--asset", "1"])
        await wait_for(lambda: proc.frames() > 10)
        proc.popen.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)  # inside the drain
        proc.popen.send_signal(signal.SIGHUP)
        proc.popen.send_signal(signal.SIGTERM)
        await wait_for(lambda: proc.popen.poll() is not None, scaled(5.0))
    assert proc.popen.returncode == 0, proc.logs()
    assert not [p for p in wal_dir.iterdir() if p.name.endswith(OPEN_SUFFIX)]
    assert "SIGHUP while stopping: ignored" in proc.logs()


async def test_sigterm_during_a_hung_gamma_request_still_exits_within_5s(tmp_path, exchange, procs):
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        gamma = f"http://127.0.0.1:{silent.getsockname()[1]}"
        proc = start(
            procs,
            tmp_path / "wal",
            ["--url", exchange.ws_url, "--asset", "1", "--discover", "--gamma-url", gamma],
        )
        await wait_for(lambda: proc.status().get("state") == "running")
        started = time.monotonic()
        proc.popen.send_signal(signal.SIGTERM)
        await wait_for(lambda: proc.popen.poll() is not None, scaled(5.0))
        assert proc.popen.returncode == 0, proc.logs()
        assert time.monotonic() - started < scaled(5.0)


async def test_ready_does_not_wait_for_a_hung_gamma(tmp_path, exchange, procs):
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        async with HungGamma() as gamma:
            start(
                procs,
                tmp_path / "wal",
                ["--url", exchange.ws_url, "--asset", "1", "--discover", "--gamma-url", gamma.url],
                env={"NOTIFY_SOCKET": str(notify.path)},
            )
            await wait_for(lambda: any(m.startswith("READY=1") for m in notify.drain()))
            assert any("1/1 connections up" in m for m in notify.got)
            await wait_for(lambda: gamma.requests == 1)  # the listing is still pending
    finally:
        notify.close()


# ----- a real shutdown loses nothing: capture and the fake exchange as processes -----


@pytest.fixture
def fake_process(tmp_path) -> Iterator[tuple[dict, Path]]:
    """The fake exchange in its own process, recording what it sent and received."""
    record = tmp_path / "exchange.jsonl"
    args = ["--assets", "10", "--rate", "60", "--seed", "4", "--record", str(record)]
    # one new market at most: its 2 tokens fit on the third connection (4 + 4 + 2)
    args += ["--new-market-prob", "0.05", "--max-new-markets", "1", "--record-received"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.exchange", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield json.loads(proc.stdout.readline()), record
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(TIMEOUT_S)
        if proc.stdout is not None:
            proc.stdout.close()


def _by_fake_conn(record: Path) -> tuple[dict[int, list[str | bytes]], dict[int, list[str]]]:
    """What the fake sent and received, per fake connection, in order."""
    sent: dict[int, list[str | bytes]] = {}
    received: dict[int, list[str]] = {}
    for line in record.read_text().splitlines():
        entry = json.loads(line)
        if "received" in entry:
            received.setdefault(entry["conn"], []).append(entry["received"])
        else:
            message = entry["text"] if "text" in entry else base64.b64decode(entry["b64"])
            sent.setdefault(entry["conn"], []).append(message)
    return sent, received


async def test_sigterm_loses_no_frame_the_exchange_sent_on_any_connection(
    tmp_path, procs, fake_process
):
    info, record = fake_process
    wal_dir = tmp_path / "wal"
    args = ["--url", info["ws_url"], "--discover", "--gamma-url", info["gamma_url"]]
    proc = start(procs, wal_dir, [*args, "--max-assets-per-conn", "4"])
    await wait_for(lambda: proc.status().get("connections_up") == 3 and proc.frames() > 150)
    started = time.monotonic()
    proc.popen.send_signal(signal.SIGTERM)
    await wait_for(lambda: proc.popen.poll() is not None, scaled(5.0))
    assert time.monotonic() - started < scaled(5.0)
    assert proc.popen.returncode == 0, proc.logs()
    records = wal_records(wal_dir)
    wal_frames = frames_by_conn(records)
    sent, received = _by_fake_conn(record)
    # a fake connection is the capture connection that sent the same first subscribe
    first = {r["text"]: r["conn"] for r in records if r["type"] == "sent"}
    assert set(received) == set(sent) and len(sent) == 3
    for fake_id, messages in received.items():
        conn = first[messages[0]]
        assert [r["text"] for r in records if r["type"] == "sent" and r["conn"] == conn] == (
            messages  # the subscribes and unsubscribes, in order, PINGs aside
        )
        assert wal_frames[conn] == sent[fake_id]  # every frame, in order, none lost
    subscribes = [m for ms in received.values() for m in ms if '"operation"' in m]
    assert subscribes  # the new market announced by the stream was subscribed at once
