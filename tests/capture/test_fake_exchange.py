"""The fake exchange as its own process: URLs on stdout, control endpoints, --record."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from capture.protocol import initial_subscribe
from tests.fakes.exchange import PING_TIMEOUT_S, FakeExchange
from tests.fakes.stream import Universe
from tests.timeouts import TIMEOUT_S

ROOT = Path(__file__).resolve().parents[2]


def get(url: str, method: str = "GET") -> dict:
    request = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        return json.loads(response.read())


async def test_process_mode_serves_records_and_takes_control(tmp_path):
    record = tmp_path / "sent.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fakes.exchange",
            "--assets",
            "4",
            "--rate",
            "50",
            "--seed",
            "2",
            "--record",
            str(record),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        markets = get(info["gamma_url"] + "/markets/keyset?limit=100&closed=false&active=true")
        tokens = [t for m in markets["markets"] for t in json.loads(m["clobTokenIds"])]
        assert len(tokens) == 4 and "next_cursor" not in markets
        got: list[str] = []
        async with connect(info["ws_url"], ping_interval=None) as ws:
            await ws.send(initial_subscribe(tokens))
            await ws.send("PING")
            while "PONG" not in got or len(got) < 5:
                got.append(str(await ws.recv(decode=True)))
            stats = get(info["gamma_url"] + "/control/stats", "POST")
            assert stats["connections"] == 1
        assert json.loads(got[0])[0]["event_type"] == "book"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(TIMEOUT_S)
        if proc.stdout is not None:
            proc.stdout.close()
    sent = [json.loads(line) for line in record.read_text().splitlines()]
    assert [s["text"] for s in sent[: len(got)]] == got
    assert {s["conn"] for s in sent} == {0}


# ----- realism: batches, new markets, Gamma's offset cap, the PING timeout -----


def test_the_stream_batches_price_changes_and_best_bid_asks_as_arrays():
    universe = Universe(4)
    universe.add_markets(3)
    kinds: set[tuple[str, bool]] = set()
    for _ in range(2000):
        payload = json.loads(universe.frame(universe.tokens(), 0.3, True))
        events = payload if isinstance(payload, list) else [payload]
        kinds.update((e["event_type"], isinstance(payload, list)) for e in events)
    for kind in ("last_trade_price", "price_change", "best_bid_ask"):
        assert (kind, True) in kinds and (kind, False) in kinds, kind


async def _recv_until(ws, done, got: list[str]) -> None:
    while not done():
        got.append(str(await ws.recv(decode=True)))


async def test_new_markets_are_announced_to_every_connection_and_bounded():
    async with FakeExchange(
        assets=4, rate=200, seed=6, ping_timeout=5.0, new_market_prob=0.05, max_new_markets=2
    ) as ex:
        before = set(ex.tokens())
        got: tuple[list[str], list[str]] = ([], [])
        async with (
            connect(ex.ws_url, ping_interval=None) as a,
            connect(ex.ws_url, ping_interval=None) as b,
        ):
            await a.send(initial_subscribe(sorted(before)[:2]))
            await b.send(initial_subscribe(sorted(before)[2:]))

            def announced(frames: list[str]) -> list[str]:
                return [f for f in frames if '"new_market"' in f]

            await asyncio.wait_for(
                asyncio.gather(
                    _recv_until(a, lambda: len(announced(got[0])) == 2, got[0]),
                    _recv_until(b, lambda: len(announced(got[1])) == 2, got[1]),
                ),
                TIMEOUT_S,
            )
        assert announced(got[0]) == announced(got[1])  # one broadcast, same text
        fresh = [t for f in announced(got[0]) for t in json.loads(f)["assets_ids"]]
        assert len(fresh) == 4 and not set(fresh) & before
        assert set(ex.tokens()) == before | set(fresh)  # they exist now (Gamma lists them)
        assert ex.new_markets_left == 0  # the universe stays bounded


async def test_gamma_offset_past_10000_is_422():
    async with FakeExchange(assets=2) as ex:
        url = ex.gamma_url + "/markets?active=true&closed=false&limit=100&offset="
        assert len(await asyncio.to_thread(get, url + "10000")) == 0
        with pytest.raises(urllib.error.HTTPError) as info:
            await asyncio.to_thread(get, url + "10100")
        assert info.value.code == 422
        info.value.close()


async def test_a_client_that_stops_pinging_is_dropped_after_the_ping_timeout():
    assert 10.0 < PING_TIMEOUT_S <= 12.0  # a client pinging every 10 s survives, barely
    async with (
        FakeExchange(assets=2, rate=5, ping_timeout=0.3) as ex,
        connect(ex.ws_url, ping_interval=None) as ws,
    ):
        await ws.send(initial_subscribe(ex.tokens()))
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), TIMEOUT_S)
