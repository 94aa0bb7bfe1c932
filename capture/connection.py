"""One connection to the market channel: the asyncio driver of ``capture.core``.

The protocol (record order, subscribe before PING, close classification, watchdogs,
probes, backoff) is decided by the sans-I/O ``ConnectionCore``; this module owns the
socket, the sleeps and the clock, and carries out what the core asks. Every message
received is appended to the sink (the WAL writer) as it arrives, with its receive time
and a per-connection counter ``n`` from 0 at each connect; ``append`` never blocks on
disk, so the receive loop never waits for it. Reconnects use our own backoff rather than
websockets' ``async for ws in connect(...)``: the delay must reset after a healthy
minute, 429 must back off, and every attempt must be recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol, cast

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from capture import protocol
from capture.config import MAX_FRAME_BYTES, Timing
from capture.core import Clock, ConnectionCore, ConnStats, State, SystemClock
from capture.receiver import OnMessage, Receiver
from wal import WalFatalError

log = logging.getLogger(__name__)

USER_AGENT = "polymarket-capture/0.1"
_JSON_HEADS = ("{", "[")  # a frame starting with these is market data (unless "[]")

__all__ = ["ConnStats", "Connection", "OpenGate", "Sink", "State"]


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


class Connection:
    """A connection slot with a stable id; ``run()`` until ``stop()``.

    ``siblings`` is the list of the replicas of its shard (itself included), shared by
    them: a replica compares its data with theirs.
    """

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
        on_resolved: Callable[[list[str]], None] | None = None,
        on_wal_fatal: Callable[[WalFatalError], None] | None = None,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        shard: int | None = None,
        replica: int = 0,
        siblings: list[Connection] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.core = ConnectionCore(
            conn_id,
            url,
            assets,
            timing=timing,
            clock=clock or SystemClock(),
            shard=shard,
            replica=replica,
            custom_features=custom_features,
        )
        self.id = conn_id
        self.url = url
        self.sink = sink
        self.gate = gate
        self.timing = timing
        self.custom_features = custom_features
        self.on_new_market = on_new_market
        self.on_resolved = on_resolved
        self.on_wal_fatal = on_wal_fatal
        self.max_frame_bytes = max_frame_bytes
        self.siblings = siblings if siblings is not None else [self]
        self.first_attempt = asyncio.Event()  # set once the first connect has succeeded or failed
        self._ws: ClientConnection | None = None
        self._wake = asyncio.Event()  # cuts a backoff sleep short on stop()
        # the core's messages go out in its order: a probe's unsubscribe + subscribe pair
        # must not be split by another task's subscription change
        self._send_lock = asyncio.Lock()

    @property
    def stats(self) -> ConnStats:
        return self.core.stats

    @property
    def assets(self) -> dict[str, None]:
        return self.core.assets

    @property
    def shard(self) -> int:
        return self.core.shard

    @property
    def replica(self) -> int:
        return self.core.replica

    # ----- subscriptions (called from the event loop) -----

    def add(self, assets: list[str]) -> None:
        self.core.add(assets)
        self._pump()

    def remove(self, assets: list[str]) -> None:
        self.core.remove(assets)
        self._pump()

    def _pump(self) -> None:
        """Carry out what the core asked: records to the WAL, then messages out."""
        for record in self.core.records_out():
            self._record(record)
        texts = self.core.data_to_send()
        ws = self._ws
        if texts and ws is not None:
            asyncio.get_running_loop().create_task(self._send_quietly(ws, texts))

    async def _send_quietly(self, ws: ClientConnection, texts: list[str]) -> None:
        with contextlib.suppress(ConnectionClosed):  # a reconnect resubscribes them all
            await self._send_all(ws, texts)

    async def _send_all(self, ws: ClientConnection, texts: list[str]) -> None:
        async with self._send_lock:
            for text in texts:
                await ws.send(text)

    # ----- lifecycle -----

    async def run(self, first_delay_s: float = 0.0) -> None:
        """Connect (after ``first_delay_s``), record, reconnect with backoff, until
        ``stop()``."""
        if first_delay_s > 0:
            await self._sleep(first_delay_s)
        while not self.core.stopping:
            self.core.connecting()
            await self.gate.wait()
            if self.core.stopping:
                break
            try:
                await self._session()
            except WalFatalError as exc:  # nowhere to put frames: receiving more is pointless
                self._wal_fatal(exc)
                break
            except Exception:  # a bug must cost one session, never the connection slot
                log.exception("conn %d: unexpected error; reconnecting", self.id)
            self.first_attempt.set()
            if self.core.stopping:
                break
            delay = self.core.next_delay()
            log.info("conn %d: reconnecting in %.1fs", self.id, delay)
            await self._sleep(delay)
        self.first_attempt.set()
        self.core.stopped()

    async def _sleep(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), delay)

    def _wal_fatal(self, exc: WalFatalError) -> None:
        """The WAL writer died: stop this connection and tell the daemon (which exits)."""
        self.core.stop()
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
        self.core.stop()
        self._wake.set()
        ws = self._ws
        if ws is not None:
            ws.close_timeout = self.timing.drain_timeout_s
            await ws.close(1000, "shutdown")

    async def _session(self) -> None:
        on_message = self._receiver()
        try:
            ws = await connect(
                self.url,
                max_size=self.max_frame_bytes,
                ping_interval=None,  # the exchange wants app-level text PINGs instead
                open_timeout=self.timing.open_timeout_s,
                close_timeout=self.timing.close_timeout_s,
                user_agent_header=USER_AGENT,
                create_connection=Receiver.factory(on_message),
            )
        except (OSError, TimeoutError, WebSocketException) as exc:
            status = exc.response.status_code if isinstance(exc, InvalidStatus) else None
            error = f"{type(exc).__name__}: {exc}"
            self.core.connect_failed(error, status)
            self._pump()
            log.warning("conn %d: connect to %s failed: %s", self.id, self.url, error)
            return
        if self.core.stopping:
            await ws.close(1000, "shutdown")
            return
        try:
            await self._serve(cast(Receiver, ws), on_message)
        finally:
            self._ws = None
            await ws.close()  # already closed unless cancelled; releases the socket

    async def _serve(self, ws: Receiver, on_message: OnMessage) -> None:
        self._ws = ws
        text = self.core.opened()
        self._pump()
        self.first_attempt.set()
        log.info(
            "conn %d (shard %d replica %d): connected, subscribing %d assets",
            self.id,
            self.shard,
            self.replica,
            len(self.assets),
        )
        keepalive: asyncio.Task[None] | None = None
        error: str | None = None
        try:
            await self._send_all(ws, [text])  # before any PING: the server closes on one
            keepalive = asyncio.create_task(self._keepalive(ws))
            await self._receive(ws, on_message)
        except ConnectionClosed as exc:
            error = None if exc.rcvd is not None and exc.rcvd.code in (1000, 1001) else str(exc)
        finally:
            if keepalive is not None:
                keepalive.cancel()
            self._closed(ws, error)

    async def _receive(self, ws: Receiver, on_message: OnMessage) -> None:
        """Until the connection closes: the Receiver hands ``on_message`` every message
        as it is parsed; what it leaves to websockets (fragmented messages) comes here."""
        try:
            async for message in ws:
                on_message(message)
        except ConnectionClosed:
            if ws.receive_error is None:
                raise
        if ws.receive_error is not None:  # the WAL writer died (or a bug)
            raise ws.receive_error

    def _receiver(self) -> OnMessage:
        """The hot path, one session's (``n`` from 0): record every message, count it,
        look at what it was.

        It runs for every frame and must stay close to a bare client's speed: one clock
        call (the receive time), plain counters, and a cheap test that a frame is market
        data (JSON from byte 0); only the rest (PONG, control texts, "[]", binary) is
        classified. The core reads the counters at its tick.
        """
        conn, append_frame, stats = self.id, self.sink.append_frame, self.stats
        now_ns = time.time_ns
        listening = self.on_new_market is not None or self.on_resolved is not None
        watch = self.custom_features and listening
        marked = protocol.marked
        n = 0

        def on_message(message: str | bytes) -> None:
            nonlocal n
            append_frame(now_ns(), conn, n, message)
            n += 1
            stats.frames += 1
            if type(message) is str:
                # str.isascii() is O(1) on CPython (a flag): only non-ASCII text is encoded
                stats.bytes += len(message) if message.isascii() else len(message.encode())
                if message[:1] in _JSON_HEADS and message != "[]":
                    if watch and marked(message):
                        self._market_event(message)
                    return
            else:
                stats.bytes += len(message)
            self._not_data(message)

        return on_message

    def _not_data(self, message: str | bytes) -> None:
        kind = protocol.classify(message)
        if kind is protocol.FrameKind.DATA:  # JSON after leading whitespace
            if self.custom_features and isinstance(message, str) and protocol.marked(message):
                self._market_event(message)
            return
        self.stats.not_data += 1
        self.core.control(kind)

    def _market_event(self, message: str) -> None:
        if self.on_new_market is not None:
            found = protocol.new_market_assets(message)
            if found:
                self.on_new_market(found)
        if self.on_resolved is not None:
            resolved = protocol.resolved_assets(message)
            if resolved:
                self.on_resolved(resolved)

    def peer_data(self) -> int | None:
        """Data frames the siblings ever received, or None while none of them is up."""
        others = [c for c in self.siblings if c is not self]
        if not any(c.stats.state is State.UP for c in others):
            return None
        return sum(c.stats.data for c in others)

    async def _keepalive(self, ws: ClientConnection) -> None:
        """Tick the core: PINGs (the subscribe went out first), watchdogs, probes."""
        try:
            while True:
                wait = self.core.tick(self.peer_data())
                self._pump_records()
                await self._send_all(ws, self.core.data_to_send())
                if self.core.close_request is not None:
                    code, reason = self.core.close_request
                    log.warning("conn %d: %s, closing to reconnect", self.id, self.core.stall_error)
                    await ws.close(code, reason)
                    return
                await asyncio.sleep(wait)
        except ConnectionClosed:
            return
        except Exception:  # without keepalive the session is blind: end it, reconnect
            log.exception("conn %d: keepalive failed; closing to reconnect", self.id)
            await ws.close(1011, "keepalive failed")

    def _pump_records(self) -> None:
        for record in self.core.records_out():
            self._record(record)

    def _closed(self, ws: ClientConnection, error: str | None) -> None:
        self.core.closed(ws.close_code, ws.close_reason or "", error)
        self._pump_records()
        close = self.stats.last_close or {}
        log.log(
            logging.INFO if self.core.stopping else logging.WARNING,
            "conn %d: closed, code %s%s%s",
            self.id,
            close.get("code"),
            f" reason {close.get('reason')!r}" if close.get("reason") else "",
            f" ({close.get('error')})" if close.get("error") else "",
        )

    def _record(self, record: dict[str, Any]) -> None:
        """Append a non-frame record. A dead WAL writer is reported, not raised: this runs
        in cleanup paths and in subscription changes made by the daemon."""
        try:
            self.sink.append(record)
        except WalFatalError as exc:
            self._wal_fatal(exc)
