"""One connection against the fake exchange on loopback (real sockets, short intervals)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import random
import time
from collections.abc import AsyncIterator

import pytest

from capture import protocol
from capture.config import Timing
from capture.connection import Connection, OpenGate
from tests.capture.helpers import DeafServer, ListSink, wait_for
from tests.fakes.exchange import FakeExchange
from tests.timeouts import TIMEOUT_S, scaled

FAST = Timing(
    ping_interval_s=0.2,
    pong_timeout_s=1.0,
    silence_timeout_s=1.0,
    backoff_initial_s=0.05,
    backoff_max_s=0.2,
    open_spacing_s=0.01,
    close_timeout_s=0.5,
    tick_s=0.1,
    probe_timeout_s=0.5,
)


@pytest.fixture
async def exchange() -> AsyncIterator[FakeExchange]:
    async with FakeExchange(assets=6, rate=50, seed=7, ping_timeout=2.0) as ex:
        yield ex


class Running:
    def __init__(self, conn: Connection, sink: ListSink) -> None:
        self.conn = conn
        self.sink = sink
        self.task = asyncio.create_task(conn.run())

    async def stop(self) -> None:
        await self.conn.stop()
        await asyncio.wait_for(self.task, TIMEOUT_S)


@pytest.fixture
async def start(exchange):
    running: list[Running] = []

    def _start(assets, timing=FAST, on_new_market=None, url=None) -> Running:
        sink = ListSink()
        conn = Connection(
            0,
            url or exchange.ws_url,
            assets,
            sink=sink,
            gate=OpenGate(timing.open_spacing_s),
            timing=timing,
            on_new_market=on_new_market,
        )
        running.append(Running(conn, sink))
        return running[-1]

    yield _start
    for r in running:
        await r.stop()


async def test_first_message_is_the_exact_subscribe_then_pings(exchange, start):
    assets = exchange.tokens()[:2]
    run = start(assets)
    await wait_for(lambda: len(exchange.received[0]) >= 4)
    received = exchange.received[0]
    assert received[0] == protocol.initial_subscribe(assets)
    assert set(received[1:4]) == {"PING"}
    sent = run.sink.of("sent")
    assert [s["text"] for s in sent] == [received[0]]  # PINGs are not recorded


async def test_ping_cadence_follows_the_interval(exchange, start):
    start(exchange.tokens()[:1], timing=Timing(**{**FAST.__dict__, "ping_interval_s": 0.3}))
    times: list[float] = []
    seen = 0
    deadline = time.monotonic() + TIMEOUT_S
    while len(times) < 5 and time.monotonic() < deadline:
        pings = exchange.received[0].count("PING")
        if pings > seen:
            seen = pings
            times.append(time.monotonic())
        await asyncio.sleep(0.01)
    gaps = [b - a for a, b in itertools.pairwise(times[1:])]
    assert len(gaps) >= 3
    assert all(0.15 < gap < 1.5 for gap in gaps), gaps


async def test_reconnects_and_resubscribes_the_same_assets_after_an_abrupt_close(exchange, start):
    assets = exchange.tokens()[:3]
    run = start(assets)
    await wait_for(lambda: run.conn.stats.frames > 3)
    exchange.drop_all()
    await wait_for(lambda: len(exchange.received[1]) > 0)
    assert exchange.received[1][0] == protocol.initial_subscribe(assets)
    closes = run.sink.of("conn_close")
    assert closes[0]["code"] == 1006 and closes[0]["error"]
    opens = run.sink.of("conn_open")
    assert len(opens) == 2
    await wait_for(lambda: run.sink.records[-1]["type"] == "frame")
    frames_after = [
        r for r in run.sink.records if r["type"] == "frame" and r["ts_ns"] > opens[1]["ts_ns"]
    ]
    assert frames_after[0]["n"] == 0  # the counter restarts at each connect


async def test_data_silence_watchdog_records_a_stall_and_reconnects(exchange, start):
    run = start(exchange.tokens()[:2])
    await wait_for(lambda: run.conn.stats.frames > 2)
    exchange.stall_data = True  # PONGs keep coming
    await wait_for(lambda: run.sink.of("stall"))
    stall = run.sink.of("stall")[0]
    assert stall["kind"] == "no_data" and stall["silent_s"] >= 1.0
    exchange.stall_data = False
    await wait_for(lambda: len(run.sink.of("conn_open")) == 2)
    close = run.sink.of("conn_close")[0]
    assert "no_data" in close["error"]
    assert run.conn.stats.reconnects["stall"] == 1


async def test_no_pong_watchdog_records_a_stall_and_reconnects(exchange, start):
    run = start(exchange.tokens()[:2])
    await wait_for(lambda: run.conn.stats.frames > 2)
    exchange.stall_all = True
    await wait_for(lambda: run.sink.of("stall"))
    assert run.sink.of("stall")[0]["kind"] == "no_pong"
    exchange.stall_all = False
    await wait_for(lambda: len(run.sink.of("conn_open")) == 2)
    assert run.conn.stats.stalls["no_pong"] == 1


class NoJitter(random.Random):
    """Backoff delays exactly initial * 2**n: growth is then visible on the wire."""

    def uniform(self, a: float, b: float) -> float:
        return 0.0


async def test_http_429_at_the_handshake_backs_off_exponentially_then_connects(exchange, start):
    exchange.reject(429, count=3)
    timing = dataclasses.replace(FAST, backoff_initial_s=0.1, backoff_max_s=5.0)
    run = start(exchange.tokens()[:1], timing=timing)
    run.conn.core.backoff.rng = NoJitter()  # before the first attempt fails
    await wait_for(lambda: run.sink.of("conn_open"))
    failures = run.sink.of("conn_close")
    assert len(failures) == 3
    assert all("429" in f["error"] for f in failures)
    assert run.conn.stats.reconnects["http_429"] == 3
    times = exchange.handshake_times
    assert len(times) == 4  # three rejected, then the one that connected
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] >= 0.1  # backed off, not hammered
    # delays 0.1, 0.2, 0.4 s: each gap about twice the one before (handshakes take ms)
    assert all(later > 1.5 * earlier for earlier, later in itertools.pairwise(gaps)), gaps


async def test_every_kind_of_frame_is_recorded_verbatim(exchange, start):
    run = start(exchange.tokens()[:2])
    await wait_for(lambda: run.conn.stats.frames > 2)
    run.conn.add(["12345"])  # unknown asset: the server answers []
    await exchange.send_garbage()  # malformed JSON and a binary frame
    await exchange.send_text("INVALID OPERATION")
    await exchange.send_text("NO NEW ASSETS")
    await wait_for(lambda: "PONG" in [r.get("text") for r in run.sink.of("frame")])
    await wait_for(lambda: len(run.sink.of("frame")) >= len(exchange.sent[0]))
    frames = run.sink.of("frame")
    got = [f["text"] if "text" in f else f["b64"] for f in frames]
    want = [
        m if isinstance(m, str) else __import__("base64").b64encode(m).decode()
        for m in exchange.sent[0][: len(got)]
    ]
    assert got == want
    texts = set(got)
    assert {"PONG", "[]", "INVALID OPERATION", "NO NEW ASSETS"} <= texts
    assert any("b64" in f for f in frames)
    assert [f["n"] for f in frames] == list(range(len(frames)))


async def test_subscribe_and_unsubscribe_on_an_open_connection_are_recorded(exchange, start):
    tokens = exchange.tokens()
    run = start(tokens[:2])
    await wait_for(lambda: run.conn.stats.frames > 0)
    run.conn.add([tokens[2]])
    run.conn.remove([tokens[0]])
    await wait_for(
        lambda: len(exchange.received[0]) >= 3 and tokens[0] not in exchange.conns[0].assets
    )
    texts = [json.loads(s["text"]) for s in run.sink.of("sent")]
    assert texts[1] == {
        "operation": "subscribe",
        "assets_ids": [tokens[2]],
        "custom_feature_enabled": True,
    }
    assert texts[2] == {"operation": "unsubscribe", "assets_ids": [tokens[0]]}
    assert list(exchange.conns[0].assets) == [tokens[1], tokens[2]]


async def test_new_market_events_are_reported(exchange, start):
    found: list[list[str]] = []
    run = start(exchange.tokens()[:2], on_new_market=found.append)
    await wait_for(lambda: run.conn.stats.frames > 0)
    tokens = exchange.announce_market()
    await wait_for(lambda: found)
    assert found[0] == tokens


async def test_connect_failure_is_recorded_and_retried():
    sink = ListSink()
    conn = Connection(
        3, "ws://127.0.0.1:1/ws/market", ["1"], sink=sink, gate=OpenGate(0), timing=FAST
    )
    task = asyncio.create_task(conn.run())
    await wait_for(lambda: len(sink.of("conn_close")) >= 2)
    await conn.stop()
    await asyncio.wait_for(task, TIMEOUT_S)
    assert sink.of("conn_close")[0]["code"] is None
    assert "connect" in conn.stats.reconnects.most_common(1)[0][0]


class FailsOnce(ListSink):
    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def append(self, record):
        if record["type"] == "frame" and not self.failed:
            self.failed = True
            raise RuntimeError("a bug")
        return super().append(record)


async def test_an_unexpected_error_costs_one_session_not_the_connection(exchange, caplog):
    sink = FailsOnce()
    conn = Connection(
        0, exchange.ws_url, exchange.tokens()[:1], sink=sink, gate=OpenGate(0), timing=FAST
    )
    task = asyncio.create_task(conn.run())
    await wait_for(lambda: len(sink.of("conn_open")) == 2 and sink.of("frame"))
    await conn.stop()
    await asyncio.wait_for(task, TIMEOUT_S)
    assert "unexpected error" in caplog.text


async def test_stop_records_everything_sent_before_the_server_saw_our_close():
    # The watchdog is not under test: a flat-out stream on a busy machine can hold a PONG
    # back for more than FAST's second.
    timing = dataclasses.replace(FAST, pong_timeout_s=TIMEOUT_S, silence_timeout_s=TIMEOUT_S)
    async with FakeExchange(assets=4, rate=0, seed=5, ping_timeout=scaled(10)) as ex:  # flat out
        sink = ListSink()
        conn = Connection(0, ex.ws_url, ex.tokens(), sink=sink, gate=OpenGate(0), timing=timing)
        task = asyncio.create_task(conn.run())
        await wait_for(lambda: conn.stats.frames > 2000)
        await conn.stop()  # returns once the server has closed: the drain is over
        await asyncio.wait_for(task, TIMEOUT_S)
        frames = [f["text"] for f in sink.of("frame")]
        assert frames == ex.sent[0]  # thousands in flight at the stop, none lost
        close = sink.of("conn_close")[-1]
        assert close["code"] == 1000 and close["reason"] == "shutdown"


async def test_received_bytes_count_utf8_bytes_not_characters(exchange, start):
    run = start([])  # no assets: only PONGs and what the test sends
    await wait_for(lambda: "PONG" in exchange.sent[0])
    text = '{"event_type": "new_market", "question": "Élection 2028 — qui gagne ? 🗳"}'
    assert len(text.encode()) > len(text)
    await exchange.send_text(text)
    await exchange.send_garbage()  # binary frames count their bytes

    def wire_bytes() -> int:
        return sum(len(m.encode() if isinstance(m, str) else m) for m in exchange.sent[0])

    # compared when both sides agree on the frame count (PONGs keep coming)
    await wait_for(
        lambda: (
            run.conn.stats.frames == len(exchange.sent[0]) > 3
            and run.conn.stats.bytes == wire_bytes()
            and text in exchange.sent[0]
        )
    )


async def test_stop_aborts_after_the_drain_timeout_when_the_server_never_closes():
    timing = dataclasses.replace(FAST, drain_timeout_s=0.3, pong_timeout_s=30.0)
    async with DeafServer() as server:
        sink = ListSink()
        conn = Connection(0, server.url, ["1"], sink=sink, gate=OpenGate(0), timing=timing)
        task = asyncio.create_task(conn.run())
        await wait_for(lambda: conn.stats.frames > 5)
        at_stop = conn.stats.frames
        await asyncio.wait_for(conn.stop(), TIMEOUT_S)  # no close from the server: aborted
        await asyncio.wait_for(task, TIMEOUT_S)
        assert conn.stats.frames > at_stop  # it went on recording during the drain
        assert len(sink.of("frame")) == conn.stats.frames
        close = sink.of("conn_close")[-1]
        assert close["code"] == 1006 and conn.stats.state == "stopped"
