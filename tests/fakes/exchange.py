"""A fake Polymarket: the market channel on ``/ws/market`` and Gamma's ``/markets`` and
``/markets/keyset``, on one loopback port, with fault switches. See PROTOCOL.md.

In tests: ``async with FakeExchange(assets=10) as ex:`` then ``ex.ws_url``,
``ex.gamma_url``, ``ex.sent[conn]`` (every message sent to a connection, in order),
``ex.received[conn]``, and faults (``drop_all()``, ``stall_data``, ``stall_all``,
``reject(429, count)``, ``send_garbage()``, ``announce_market()``, ``close_market()``,
``resolve_market()``, ``stall_conns`` (fake connection ids whose data stalls: a zombie
that still answers PING), ``gamma_fail_after`` (pages served before Gamma fails)),
``handshake_times`` (monotonic time of each handshake request, rejected ones too).
With ``new_market_prob`` > 0, each data frame is instead, with that probability, a new
market announced to every connection (at most ``max_new_markets`` of them).
As a process, see tests/fakes/run.py.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import urllib.parse
from collections import defaultdict
from pathlib import Path
from typing import IO, Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from tests.fakes import http
from tests.fakes.stream import Universe

PING_TIMEOUT_S = 12.0  # reported ~10 s; a client pinging every 10 s must survive
MAX_FRAME_BYTES = 64 << 20
FLAT_OUT_POOL = 2000  # frames made once per connection when sending flat out


class FakeConn:
    def __init__(self, cid: int, ws: ServerConnection, universe: Universe) -> None:
        self.id = cid
        self.ws = ws
        self.gen = universe
        self.assets: dict[str, None] = {}
        self.typed = False
        self.custom = False
        self.last_ping = time.monotonic()


class FakeExchange:
    def __init__(
        self,
        *,
        assets: int = 10,
        rate: float = 20.0,
        trade_fraction: float = 0.3,
        seed: int = 1,
        ping_timeout: float = PING_TIMEOUT_S,
        port: int = 0,
        record: Path | None = None,
        record_received: bool = False,
        keep_sent: bool = True,
        new_market_prob: float = 0.0,
        max_new_markets: int = 5,
        shared_stream: bool = False,
    ) -> None:
        self.universe = Universe(seed)
        self.universe.add_markets(max(1, (assets + 1) // 2))
        self.rate = rate
        self.trade_fraction = trade_fraction
        self.seed = seed
        self.ping_timeout = ping_timeout
        self.port = port
        self.keep_sent = keep_sent
        self.conns: dict[int, FakeConn] = {}
        self.sent: dict[int, list[str | bytes]] = defaultdict(list)
        self.received: dict[int, list[str | bytes]] = defaultdict(list)
        self.handshakes = 0
        self.handshake_times: list[float] = []
        self.new_market_prob = new_market_prob
        self.new_markets_left = max_new_markets if new_market_prob > 0 else 0
        self.gamma_keyset = True  # False: /markets/keyset is a 404, as on an older Gamma
        self.gamma_requests: list[str] = []
        self.stall_data = False
        self.stall_all = False
        self.stall_conns: set[int] = set()  # these fake connections get no data at all
        self.gamma_fail_after: int | None = None  # Gamma pages served before 500s
        self._reject: list[int] = []
        self._record_path = record
        self._record_received = record_received
        self._record: IO[str] | None = None
        self._server: Server | None = None
        self._next_id = 0
        # shared_stream: like the real exchange, every connection subscribed to the same
        # assets gets the same events (redundant connections); else one stream each.
        self.shared_stream = shared_stream
        self._shared: dict[tuple[str, ...], Universe] = {}
        self._broadcast: asyncio.Task[None] | None = None

    # ----- lifecycle -----

    async def start(self) -> FakeExchange:
        if self._record_path is not None:
            self._record = self._record_path.open("a", encoding="utf-8", buffering=1)
        self._server = await serve(
            self._handle,
            "127.0.0.1",
            self.port,
            process_request=self._http,
            ping_interval=None,
            max_size=MAX_FRAME_BYTES,
        )
        self.port = self._server.sockets[0].getsockname()[1] if self.port == 0 else self.port
        if self.shared_stream:
            self._broadcast = asyncio.create_task(self._produce_shared())
        return self

    async def stop(self) -> None:
        if self._broadcast is not None:
            self._broadcast.cancel()
            await asyncio.gather(self._broadcast, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._record is not None:
            self._record.close()
            self._record = None

    async def __aenter__(self) -> FakeExchange:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/market"

    @property
    def gamma_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tokens(self) -> list[str]:
        return self.universe.tokens()

    # ----- faults -----

    def drop_all(self) -> None:
        """Close every connection abruptly (no close frame)."""
        for conn in list(self.conns.values()):
            conn.ws.transport.abort()

    def drop_conn(self, cid: int) -> bool:
        """Close connection ``cid`` abruptly; False when it is not open."""
        conn = self.conns.get(cid)
        if conn is None:
            return False
        conn.ws.transport.abort()
        return True

    def reject(self, status: int = 429, count: int = 1) -> None:
        """Answer the next ``count`` handshakes with HTTP ``status``."""
        self._reject.extend([status] * count)

    async def send_garbage(self) -> None:
        """Malformed JSON and a binary frame to every connection."""
        for conn in list(self.conns.values()):
            await self._send(conn, '{"event_type": "price_change", "market": ')
            await self._send(conn, b"\x00\xffnot text\x80")

    async def send_text(self, text: str) -> None:
        """Send ``text`` to every connection (e.g. ``NO NEW ASSETS``)."""
        for conn in list(self.conns.values()):
            await self._send(conn, text)

    def announce_market(self, gen: Universe | None = None) -> list[str]:
        """A new market (made by ``gen``, a connection's generator, or the universe's):
        Gamma lists it and the same ``new_market`` goes to every custom connection."""
        gen = gen or self.universe
        market = gen.add_markets(1)[0]
        text = gen.new_market(market)
        for conn in list(self.conns.values()):
            if conn.custom and conn.typed:
                asyncio.get_running_loop().create_task(self._send(conn, text))
        return list(market.tokens)

    def _maybe_announce(self, conn: FakeConn) -> bool:
        """Now and then (``new_market_prob``, seeded per connection) a new market."""
        if self.new_markets_left <= 0 or conn.gen.rng.random() >= self.new_market_prob:
            return False
        self.new_markets_left -= 1
        self.announce_market(conn.gen)
        return True

    def close_market(self, token: str) -> None:
        self.universe.by_token[token].closed = True

    def resolve_market(self, token: str) -> list[str]:
        """Close ``token``'s market and send ``market_resolved`` to every custom
        connection; returns the market's tokens."""
        market = self.universe.by_token[token]
        market.closed = True
        text = self.universe.market_resolved(market)
        for conn in list(self.conns.values()):
            if conn.custom and conn.typed:
                asyncio.get_running_loop().create_task(self._send(conn, text))
        return list(market.tokens)

    def _stalled(self, conn: FakeConn) -> bool:
        return self.stall_data or self.stall_all or conn.id in self.stall_conns

    # ----- the WebSocket side -----

    async def _handle(self, ws: ServerConnection) -> None:
        cid = self._next_id
        self._next_id += 1
        conn = FakeConn(cid, ws, self.universe.fork(self.seed * 1000 + cid))
        self.conns[cid] = conn
        tasks = [asyncio.create_task(self._keep(conn))]
        if not self.shared_stream:
            tasks.append(asyncio.create_task(self._produce(conn)))
        try:
            async for message in ws:
                self.received[cid].append(message)
                if self._record_received and message != "PING" and isinstance(message, str):
                    self._write({"conn": cid, "ts_ns": time.time_ns(), "received": message})
                await self._on_message(conn, message)
        except ConnectionClosed:
            pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            del self.conns[cid]

    async def _send(self, conn: FakeConn, message: str | bytes) -> None:
        if conn.ws.state is not State.OPEN:
            return  # closing or closed: it could never reach the client, so it is not "sent"
        if self.keep_sent:
            self.sent[conn.id].append(message)
        if self._record is not None:
            entry: dict[str, Any] = {"conn": conn.id, "ts_ns": time.time_ns()}
            if isinstance(message, str):
                entry["text"] = message
            else:
                entry["b64"] = base64.b64encode(message).decode()
            self._write(entry)
        with contextlib.suppress(ConnectionClosed):
            await conn.ws.send(message)

    def _write(self, entry: dict[str, Any]) -> None:
        if self._record is not None:
            self._record.write(json.dumps(entry) + "\n")

    async def _on_message(self, conn: FakeConn, message: str | bytes) -> None:
        if message == "PING":
            if not conn.typed:
                await conn.ws.close(1008, "PING before subscribe")
                return
            conn.last_ping = time.monotonic()
            if not self.stall_all:
                await self._send(conn, "PONG")
            return
        try:
            body = json.loads(message)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            await self._send(conn, "INVALID OPERATION")
        elif "type" in body:
            await self._subscribe_first(conn, body)
        elif body.get("operation") == "subscribe":
            await self._subscribe_more(conn, [str(a) for a in body.get("assets_ids", [])])
        elif body.get("operation") == "unsubscribe":
            for asset in body.get("assets_ids", []):
                conn.assets.pop(str(asset), None)
        else:
            await self._send(conn, "INVALID OPERATION")

    async def _subscribe_first(self, conn: FakeConn, body: dict[str, Any]) -> None:
        if conn.typed or body.get("type") != "market":
            await self._send(conn, "INVALID OPERATION")
            return
        conn.typed = True
        conn.custom = bool(body.get("custom_feature_enabled"))
        assets = [str(a) for a in body.get("assets_ids", [])]
        conn.assets.update(dict.fromkeys(assets))
        if body.get("initial_dump", True) and assets:
            await self._dump(conn, assets)

    async def _subscribe_more(self, conn: FakeConn, assets: list[str]) -> None:
        new = [a for a in assets if a not in conn.assets]
        if not new:
            await self._send(conn, "NO NEW ASSETS")
            return
        conn.assets.update(dict.fromkeys(new))
        if not self._stalled(conn):  # a zombie answers no resubscribe either
            await self._dump(conn, new)

    async def _dump(self, conn: FakeConn, assets: list[str]) -> None:
        known = [a for a in assets if a in self.universe.by_token]
        await self._send(conn, conn.gen.dump(known) if known else "[]")

    def _live(self, conn: FakeConn) -> list[str]:
        by_token = self.universe.by_token
        return [a for a in conn.assets if a in by_token and not by_token[a].closed]

    async def _produce(self, conn: FakeConn) -> None:
        """Data frames at ``rate`` per second per connection (0: as fast as it can, cycling
        through a pool of pre-made frames so the fake is not the bottleneck)."""
        period = 1 / self.rate if self.rate > 0 else 0.0
        next_at = time.monotonic()
        pool: list[str] = []
        while True:
            if period:
                next_at += period
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            live = self._live(conn) if conn.typed else []
            if not live or self._stalled(conn):
                if not period:
                    await asyncio.sleep(0.01)
                next_at = time.monotonic()
                continue
            if self.new_markets_left and conn.custom and self._maybe_announce(conn):
                continue
            if period:
                await self._send(conn, conn.gen.frame(live, self.trade_fraction, conn.custom))
                continue
            if not pool:
                pool = [
                    conn.gen.frame(live, self.trade_fraction, conn.custom)
                    for _ in range(FLAT_OUT_POOL)
                ]
            for text in pool:
                await self._send(conn, text)
            await asyncio.sleep(0)  # let PINGs and controls through

    async def _produce_shared(self) -> None:
        """shared_stream: at ``rate`` frames/s per set of assets, one frame sent to every
        connection subscribed to exactly that set (and not stalled)."""
        period = 1 / self.rate if self.rate > 0 else 0.01
        while True:
            await asyncio.sleep(period)
            groups: dict[tuple[str, ...], list[FakeConn]] = defaultdict(list)
            for conn in list(self.conns.values()):
                live = self._live(conn) if conn.typed else []
                if live and not self._stalled(conn):
                    groups[tuple(sorted(live))].append(conn)
            for key, conns in groups.items():
                gen = self._shared.get(key)
                if gen is None:
                    gen = self._shared[key] = self.universe.fork(
                        self.seed * 1000 + len(self._shared)
                    )
                text = gen.frame(list(key), self.trade_fraction, conns[0].custom)
                for conn in conns:
                    await self._send(conn, text)

    async def _keep(self, conn: FakeConn) -> None:
        """Drop a client that sends no PING for ``ping_timeout``."""
        while True:
            await asyncio.sleep(min(1.0, self.ping_timeout / 4))
            if time.monotonic() - conn.last_ping > self.ping_timeout:
                conn.ws.transport.abort()
                return

    # ----- the HTTP side: handshake faults, Gamma, control -----

    def _http(self, ws: ServerConnection, request: Request) -> Response | None:
        url = urllib.parse.urlsplit(request.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        if url.path == "/ws/market":
            self.handshakes += 1
            self.handshake_times.append(time.monotonic())
            if self._reject:
                status = self._reject.pop(0)
                return ws.respond(status, "Too Many Requests\n" if status == 429 else "error\n")
            return None
        if url.path.startswith("/markets"):
            self.gamma_requests.append(request.path)
        if url.path.startswith("/markets") and self.gamma_fail_after is not None:
            if self.gamma_fail_after <= 0:
                return ws.respond(500, "Internal Server Error\n")
            self.gamma_fail_after -= 1
        if url.path == "/markets":
            return http.json_response(ws, http.markets_offset(ws, self.universe, query))
        if url.path == "/markets/keyset" and self.gamma_keyset:
            return http.json_response(ws, http.markets_keyset(self.universe, query))
        if url.path.startswith("/control/"):
            return http.json_response(
                ws, http.control(self, url.path.removeprefix("/control/"), query)
            )
        return ws.respond(404, "Not Found\n")


if __name__ == "__main__":
    from tests.fakes.run import main

    main()
