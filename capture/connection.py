"""One connection to the market channel: connect, subscribe, keep alive, record.

Every message received is appended to the sink (the WAL writer) as it arrives, with
its receive time and a per-connection counter ``n`` from 0 at each connect. ``append``
never blocks on disk, so the receive loop never waits for it. Reconnects use our own
``Backoff`` rather than websockets' ``async for ws in connect(...)``: the delay must
reset after a healthy minute, 429 must back off, and every attempt must be recorded.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from capture import protocol
from capture.backoff import Backoff
from capture.config import MAX_FRAME_BYTES, Timing
from capture.watchdog import Watchdog
from wal import WalFatalError, records

log = logging.getLogger(__name__)

WATCHDOG_TICK_S = 1.0  # how often watchdogs are checked; their timeouts are 30 s and up
USER_AGENT = "polymarket-capture/0.1"
_JSON_HEADS = ("{", "[")  # a frame starting with these is market data (unless "[]")


class Sink(Protocol):
    """Where records go: the WAL writer (``append_frame`` is its fast path for frames)."""

    def append(self, record: dict[str, Any]) -> int: ...

    def append_frame(self, ts_ns: int, conn: int, n: int, message: str | bytes) -> int: ...


class OpenGate:
    """Spaces connection opens (first ones and reconnects) ``spacing_s`` apart."""

    def __init__(self, spacing_s: float) -> None:
        self.spacing_s = spacing_s
        self._lock = asyncio.Lock()
        self._last = float("-inf")

    async def wait(self) -> None:
        async with self._lock:
            delay = self._last + self.spacing_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self._last = time.monotonic()


@dataclass
class ConnStats:
    """What status and metrics show about one connection (monotonic times)."""

    state: str = "new"  # new, connecting, up, backoff, stopped
    frames: int = 0
    not_data: int = 0  # frames that are not market data (PONG, control texts, "[]", binary)
    bytes: int = 0  # bytes received: text frames counted in UTF-8, as on the wire
    connects: int = 0
    last_frame_at: float | None = None  # seen by the keepalive tick, so within ~1 s
    up_since_ns: int | None = None
    last_close: dict[str, Any] | None = None
    reconnects: collections.Counter[str] = field(default_factory=collections.Counter)
    stalls: collections.Counter[str] = field(default_factory=collections.Counter)


class Connection:
    """A connection slot with a stable id; ``run()`` until ``stop()``."""

    def __init__(
        self,
        conn_id: int,
        url: str,
        assets: Iterable[str],
        *,
        sink: Sink,
        gate: OpenGate,
        timing: Timing,
        custom_features: bool = True,
        on_new_market: Callable[[list[str]], None] | None = None,
        on_wal_fatal: Callable[[WalFatalError], None] | None = None,
        max_frame_bytes: int = MAX_FRAME_BYTES,
    ) -> None:
        self.id = conn_id
        self.url = url
        self.assets: dict[str, None] = dict.fromkeys(assets)
        self.sink = sink
        self.gate = gate
        self.timing = timing
        self.custom_features = custom_features
        self.on_new_market = on_new_market
        self.on_wal_fatal = on_wal_fatal
        self.max_frame_bytes = max_frame_bytes
        self.stats = ConnStats()
        self.backoff = Backoff(timing.backoff_initial_s, timing.backoff_max_s, timing.healthy_s)
        self.first_attempt = asyncio.Event()  # set once the first connect has succeeded or failed
        self._ws: ClientConnection | None = None
        self._on_wire = False  # the initial subscribe went out on the current socket
        self._stopping = False
        self._wake = asyncio.Event()  # cuts a backoff sleep short on stop()
        self._stall_error: str | None = None

    # ----- subscriptions (called from the event loop) -----

    def add(self, assets: list[str]) -> None:
        new = [a for a in assets if a not in self.assets]
        self.assets.update(dict.fromkeys(new))
        if new and self._on_wire:
            self._send_control(protocol.subscribe(new, custom_features=self.custom_features))

    def remove(self, assets: list[str]) -> None:
        gone = [a for a in assets if a in self.assets]
        for asset in gone:
            del self.assets[asset]
        if gone and self._on_wire:
            self._send_control(protocol.unsubscribe(gone))

    def _send_control(self, text: str) -> None:
        ws = self._ws
        if ws is None:
            return
        self._record(records.sent(time.time_ns(), self.id, text))
        asyncio.get_running_loop().create_task(self._send_quietly(ws, text))

    async def _send_quietly(self, ws: ClientConnection, text: str) -> None:
        with contextlib.suppress(ConnectionClosed):  # a reconnect resubscribes them all
            await ws.send(text)

    # ----- lifecycle -----

    async def run(self) -> None:
        """Connect, record, reconnect with backoff, until ``stop()``."""
        while not self._stopping:
            self.stats.state = "connecting"
            await self.gate.wait()
            if self._stopping:
                break
            try:
                await self._session()
            except WalFatalError as exc:  # nowhere to put frames: receiving more is pointless
                self._wal_fatal(exc)
                break
            except Exception:  # a bug must cost one session, never the connection slot
                log.exception("conn %d: unexpected error; reconnecting", self.id)
            self.first_attempt.set()
            if self._stopping:
                break
            self.backoff.disconnected(time.monotonic())
            self.stats.state = "backoff"
            delay = self.backoff.next_delay()
            log.info("conn %d: reconnecting in %.1fs", self.id, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
        self.first_attempt.set()
        self.stats.state = "stopped"

    def _wal_fatal(self, exc: WalFatalError) -> None:
        """The WAL writer died: stop this connection and tell the daemon (which exits)."""
        self._stopping = True
        self._wake.set()
        if self.on_wal_fatal is not None:
            self.on_wal_fatal(exc)

    async def stop(self) -> None:
        """Stop without losing a frame: send our close frame and keep recording.

        The receive loop is not cancelled: it goes on recording every message the server
        sent before it saw our close frame, until the server's close ends the iterator.
        A server that does not close within ``drain_timeout_s`` is cut off (websockets
        aborts the socket when the close times out). Returns when the socket is closed.
        """
        self._stopping = True
        self._wake.set()
        ws = self._ws
        if ws is not None:
            ws.close_timeout = self.timing.drain_timeout_s
            await ws.close(1000, "shutdown")

    async def _session(self) -> None:
        try:
            ws = await connect(
                self.url,
                max_size=self.max_frame_bytes,
                ping_interval=None,  # the exchange wants app-level text PINGs instead
                open_timeout=self.timing.open_timeout_s,
                close_timeout=self.timing.close_timeout_s,
                user_agent_header=USER_AGENT,
            )
        except (OSError, TimeoutError, WebSocketException) as exc:
            self._connect_failed(exc)
            return
        if self._stopping:
            await ws.close(1000, "shutdown")
            return
        try:
            await self._serve(ws)
        finally:
            self._ws = None
            self._on_wire = False
            await ws.close()  # already closed unless cancelled; releases the socket

    def _connect_failed(self, exc: BaseException) -> None:
        if isinstance(exc, InvalidStatus):
            reason = f"http_{exc.response.status_code}"
        else:
            reason = "connect_failed"
        self.stats.reconnects[reason] += 1
        error = f"{type(exc).__name__}: {exc}"
        self._record(records.conn_close(time.time_ns(), self.id, self.url, None, "", error))
        log.warning("conn %d: connect to %s failed: %s", self.id, self.url, error)

    async def _serve(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._stall_error = None
        self.stats.connects += 1
        self.stats.state = "up"
        self.stats.up_since_ns = time.time_ns()
        self._record(records.conn_open(time.time_ns(), self.id, self.url))
        self.backoff.connected(time.monotonic())
        self.first_attempt.set()
        assets = list(self.assets)
        text = protocol.initial_subscribe(assets, custom_features=self.custom_features)
        self._on_wire = True
        self._record(records.sent(time.time_ns(), self.id, text))
        log.info("conn %d: connected, subscribing %d assets", self.id, len(assets))
        watchdog = Watchdog(
            time.monotonic(), self.timing.pong_timeout_s, self.timing.silence_timeout_s
        )
        keepalive: asyncio.Task[None] | None = None
        error: str | None = None
        try:
            await ws.send(text)
            keepalive = asyncio.create_task(self._keepalive(ws, watchdog))
            await self._receive(ws, watchdog)
        except ConnectionClosed as exc:
            error = None if exc.rcvd is not None and exc.rcvd.code in (1000, 1001) else str(exc)
        finally:
            if keepalive is not None:
                keepalive.cancel()
            self._closed(ws, error)

    async def _receive(self, ws: ClientConnection, watchdog: Watchdog) -> None:
        """The hot loop: record every message, count it, look at what it was.

        It runs for every frame and must stay close to a bare client's speed: one clock
        call (the receive time), plain counters, and a cheap test that a frame is market
        data (JSON from byte 0); only the rest (PONG, control texts, "[]", binary) is
        classified. The watchdog's data time and ``last_frame_at`` come from the counters,
        read by the keepalive tick (``_observe``).
        """
        conn, append_frame, stats = self.id, self.sink.append_frame, self.stats
        now_ns = time.time_ns
        watch_new = self.custom_features and self.on_new_market is not None
        n = 0
        async for message in ws:
            append_frame(now_ns(), conn, n, message)
            n += 1
            stats.frames += 1
            if type(message) is str:
                # str.isascii() is O(1) on CPython (a flag): only non-ASCII text is encoded
                stats.bytes += len(message) if message.isascii() else len(message.encode())
                if message[:1] in _JSON_HEADS and message != "[]":
                    if watch_new and protocol.NEW_MARKET_MARK in message:
                        self._new_market(message)
                    continue
            else:
                stats.bytes += len(message)
            self._not_data(message, watchdog)

    def _not_data(self, message: str | bytes, watchdog: Watchdog) -> None:
        kind = protocol.classify(message)
        if kind is protocol.FrameKind.DATA:  # JSON after leading whitespace
            if self.custom_features and protocol.NEW_MARKET_MARK in message:
                self._new_market(message)  # type: ignore[arg-type]
            return
        self.stats.not_data += 1
        if kind is protocol.FrameKind.PONG:
            watchdog.last_pong = time.monotonic()

    def _observe(self, now: float, watchdog: Watchdog, seen: tuple[int, int]) -> tuple[int, int]:
        """Frames and data frames counted since ``seen``: update the times they imply."""
        frames, data = self.stats.frames, self.stats.frames - self.stats.not_data
        if frames != seen[0]:
            self.stats.last_frame_at = now
        if data != seen[1]:
            watchdog.last_data = now
        return frames, data

    def _new_market(self, message: str) -> None:
        found = protocol.new_market_assets(message)
        if found and self.on_new_market is not None:
            self.on_new_market(found)

    async def _keepalive(self, ws: ClientConnection, watchdog: Watchdog) -> None:
        """PING every interval (the subscribe went out first) and check the watchdogs."""
        next_ping = time.monotonic()
        seen = self.stats.frames, self.stats.frames - self.stats.not_data
        try:
            while True:
                now = time.monotonic()
                seen = self._observe(now, watchdog, seen)
                if now >= next_ping:
                    await ws.send(protocol.PING_TEXT)
                    next_ping = now + self.timing.ping_interval_s
                stall = watchdog.check(now, bool(self.assets))
                if stall is not None:
                    self._fire(stall.kind, stall.silent_s)
                    await ws.close(1000, f"stall: {stall.kind}")
                    return
                await asyncio.sleep(max(0.0, min(next_ping - now, WATCHDOG_TICK_S)))
        except ConnectionClosed:
            return
        except Exception:  # without keepalive the session is blind: end it, reconnect
            log.exception("conn %d: keepalive failed; closing to reconnect", self.id)
            await ws.close(1011, "keepalive failed")

    def _fire(self, kind: str, silent_s: float) -> None:
        self.stats.stalls[kind] += 1
        self._stall_error = f"watchdog {kind}: silent for {silent_s:.1f}s"
        self._record(records.stall(time.time_ns(), self.id, kind, silent_s))
        log.warning("conn %d: %s, closing to reconnect", self.id, self._stall_error)

    def _closed(self, ws: ClientConnection, error: str | None) -> None:
        code = ws.close_code if ws.close_code is not None else 1006
        reason = ws.close_reason or ""
        if self._stall_error is not None:
            error, kind = self._stall_error, "stall"
        elif self._stopping:
            kind = "shutdown"
        else:
            kind = "closed_by_server" if error is None else "connection_lost"
        if not self._stopping:
            self.stats.reconnects[kind] += 1
        self.stats.last_close = {"code": code, "reason": reason, "error": error}
        self.stats.state = "closed"
        self._record(records.conn_close(time.time_ns(), self.id, self.url, code, reason, error))
        log.log(
            logging.INFO if self._stopping else logging.WARNING,
            "conn %d: closed, code %s%s%s",
            self.id,
            code,
            f" reason {reason!r}" if reason else "",
            f" ({error})" if error else "",
        )

    def _record(self, record: dict[str, Any]) -> None:
        """Append a non-frame record. A dead WAL writer is reported, not raised: this runs
        in cleanup paths and in subscription changes made by the daemon."""
        try:
            self.sink.append(record)
        except WalFatalError as exc:
            self._wal_fatal(exc)
