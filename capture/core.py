"""One connection's protocol as a sans-I/O state machine: events in, records and
messages out, the clock passed in.

The asyncio driver (``capture.connection``) owns the socket. It tells the core what
happened (``opened``, ``control`` for a frame that is not market data, ``tick``,
``closed``, ``connect_failed``, ``add``/``remove``) and then carries out what the core
asks: ``records_out()`` go to the WAL in that order, ``data_to_send()`` go on the
socket in that order, ``close_request`` closes it. The per-frame work (append to the
WAL, count) stays in the driver's receive loop: the core reads those counters in
``tick``, about once a second, so a frame costs nothing here.

What the core decides: the record order (``conn_open``, the initial subscribe, frames,
``stall``, ``conn_close``), subscribe before any ``PING``, the ``PING`` cadence, close
classification, the watchdogs (no ``PONG``; data silence, probed before it counts; a
replica behind its siblings) and the reconnect backoff.
"""

from __future__ import annotations

import collections
import enum
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from capture import protocol
from capture.backoff import Backoff
from capture.config import Timing
from capture.watchdog import NO_DATA, NO_PONG, Watchdog
from wal import records

BEHIND_PEER = "behind_peer"
# A sibling must be this many data frames ahead: one frame can be counted by the sibling
# a moment before this replica receives the same one, and a reconnecting sibling gets
# an initial dump of its own.
PEER_LEAD_FRAMES = 3


class State(enum.StrEnum):
    NEW = "new"
    CONNECTING = "connecting"
    UP = "up"
    CLOSED = "closed"  # the session ended; backoff follows
    BACKOFF = "backoff"
    STOPPED = "stopped"


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def time_ns(self) -> int: ...


class SystemClock:
    monotonic = staticmethod(time.monotonic)
    time_ns = staticmethod(time.time_ns)


@dataclass
class ConnStats:
    """What status and metrics show about one connection (monotonic times). The driver's
    receive loop counts ``frames``, ``not_data`` and ``bytes``; the core the rest."""

    state: State = State.NEW
    frames: int = 0
    not_data: int = 0  # frames that are not market data (PONG, control texts, "[]", binary)
    bytes: int = 0  # bytes received: text frames counted in UTF-8, as on the wire
    connects: int = 0
    last_frame_at: float | None = None  # seen by the tick, so within ~1 s
    up_since_ns: int | None = None
    last_close: dict[str, Any] | None = None
    reconnects: collections.Counter[str] = field(default_factory=collections.Counter)
    stalls: collections.Counter[str] = field(default_factory=collections.Counter)
    probes: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def data(self) -> int:
        return self.frames - self.not_data


@dataclass
class _Probe:
    """An unsubscribe + subscribe of one asset, waiting for the fresh ``book``."""

    asset: str
    sent_at: float
    deadline: float


class ConnectionCore:
    """One connection slot (``conn``, replica ``replica`` of shard ``shard``) over its
    successive sessions."""

    def __init__(
        self,
        conn: int,
        url: str,
        assets: Iterable[str],
        *,
        timing: Timing,
        clock: Clock,
        shard: int | None = None,
        replica: int = 0,
        custom_features: bool = True,
        backoff: Backoff | None = None,
    ) -> None:
        self.id = conn
        self.url = url
        self.shard = conn if shard is None else shard
        self.replica = replica
        self.assets: dict[str, None] = dict.fromkeys(assets)
        self.timing = timing
        self.clock = clock
        self.custom_features = custom_features
        self.stats = ConnStats()
        self.backoff = backoff or Backoff(
            timing.backoff_initial_s, timing.backoff_max_s, timing.healthy_s
        )
        self.close_request: tuple[int, str] | None = None
        self.stall_error: str | None = None
        self.stopping = False
        self._records: list[dict[str, Any]] = []
        self._outgoing: list[str] = []
        self._on_wire = False  # the initial subscribe is out on the current session
        self._watchdog = Watchdog(0.0)
        self._next_ping = 0.0
        self._seen = (0, 0)  # frames and data frames at the last tick
        self._peer_mark: int | None = None  # siblings' data frames at our last data frame
        self._probe: _Probe | None = None
        self._probe_turn = 0

    # ----- outputs -----

    def records_out(self) -> list[dict[str, Any]]:
        out, self._records = self._records, []
        return out

    def data_to_send(self) -> list[str]:
        out, self._outgoing = self._outgoing, []
        return out

    @property
    def state(self) -> State:
        return self.stats.state

    # ----- events -----

    def connecting(self) -> None:
        self.stats.state = State.CONNECTING

    def connect_failed(self, error: str, http_status: int | None = None) -> None:
        """The handshake failed (refused, timeout, an HTTP status such as 429)."""
        reason = f"http_{http_status}" if http_status is not None else "connect_failed"
        self.stats.reconnects[reason] += 1
        self._record(records.conn_close(self.clock.time_ns(), self.id, self.url, None, "", error))

    def opened(self) -> str:
        """The socket is open: record it and return the initial subscribe to send first."""
        now, now_ns = self.clock.monotonic(), self.clock.time_ns()
        self.stats.connects += 1
        self.stats.state = State.UP
        self.stats.up_since_ns = now_ns
        self.stall_error = None
        self.close_request = None
        self.backoff.connected(now)
        self._watchdog = Watchdog(now, self.timing.pong_timeout_s, self.timing.silence_timeout_s)
        self._next_ping = now  # the first tick PINGs, after the subscribe went out
        self._seen = (self.stats.frames, self.stats.data)
        self._peer_mark = None
        self._probe = None
        text = protocol.initial_subscribe(list(self.assets), custom_features=self.custom_features)
        self._on_wire = True
        opened = records.conn_open(now_ns, self.id, self.url)
        opened.update(shard=self.shard, replica=self.replica)
        self._record(opened)
        self._record(records.sent(now_ns, self.id, text))
        return text

    def control(self, kind: protocol.FrameKind) -> None:
        """A frame that is not market data arrived (already counted by the driver)."""
        if kind is protocol.FrameKind.PONG:
            self._watchdog.last_pong = self.clock.monotonic()

    def tick(self, peer_data: int | None = None) -> float:
        """Look at the counters, PING when due, run the watchdogs; returns the seconds
        until the next tick. ``peer_data``: the data frames the sibling replicas ever
        received (a count that never goes down), or None while none of them is up."""
        if self.stats.state is not State.UP or self.close_request is not None:
            return self.timing.tick_s
        now = self.clock.monotonic()
        self._observe(now, peer_data)
        if now >= self._next_ping:
            self._outgoing.append(protocol.PING_TEXT)
            self._next_ping = now + self.timing.ping_interval_s
        self._check(now, peer_data)
        return max(0.0, min(self._next_ping - now, self.timing.tick_s))

    def add(self, assets: Iterable[str]) -> None:
        new = [a for a in assets if a not in self.assets]
        self.assets.update(dict.fromkeys(new))
        if new and self._on_wire:
            self._control(protocol.subscribe(new, custom_features=self.custom_features))

    def remove(self, assets: Iterable[str]) -> None:
        gone = [a for a in assets if a in self.assets]
        for asset in gone:
            del self.assets[asset]
        if gone and self._on_wire:
            self._control(protocol.unsubscribe(gone))

    def stop(self) -> None:
        self.stopping = True

    def closed(self, code: int | None, reason: str, error: str | None) -> None:
        """The session ended. ``code`` None: the socket died without a close frame."""
        code = 1006 if code is None else code
        if self.stall_error is not None:
            error, kind = self.stall_error, "stall"
        elif self.stopping:
            kind = "shutdown"
        else:
            kind = "closed_by_server" if error is None else "connection_lost"
        if not self.stopping:
            self.stats.reconnects[kind] += 1
        self._on_wire = False
        self._probe = None
        self.stats.last_close = {"code": code, "reason": reason, "error": error}
        self.stats.state = State.CLOSED
        self.backoff.disconnected(self.clock.monotonic())
        ts_ns = self.clock.time_ns()
        self._record(records.conn_close(ts_ns, self.id, self.url, code, reason, error))

    def next_delay(self) -> float:
        self.stats.state = State.BACKOFF
        return self.backoff.next_delay()

    def stopped(self) -> None:
        self.stats.state = State.STOPPED

    # ----- the watchdogs -----

    def _observe(self, now: float, peer_data: int | None) -> None:
        frames, data = self.stats.frames, self.stats.data
        if frames != self._seen[0]:
            self.stats.last_frame_at = now
        if data != self._seen[1]:
            self._watchdog.last_data = now
            self._peer_mark = peer_data
        elif self._peer_mark is None or peer_data is None:
            self._peer_mark = peer_data  # a sibling came up (or none is): compare from here
        self._seen = (frames, data)

    def _check(self, now: float, peer_data: int | None) -> None:
        has_assets = bool(self.assets)
        stall = self._watchdog.check(now, has_assets)
        last_data = self._watchdog.last_data
        data_age = now - (last_data if last_data is not None else self._watchdog.started)
        if stall is not None and stall.kind == NO_PONG:
            self._fire(NO_PONG, stall.silent_s)
        elif has_assets and self._behind_peer(data_age, peer_data):
            self._fire(BEHIND_PEER, round(data_age, 3))
        elif self._probe is not None:
            self._probe_result(now, data_age)
        elif stall is not None and stall.kind == NO_DATA:
            self._send_probe(now)

    def _behind_peer(self, data_age: float, peer_data: int | None) -> bool:
        if peer_data is None or self._peer_mark is None:
            return False
        lead = peer_data - self._peer_mark
        return lead >= PEER_LEAD_FRAMES and data_age >= self.timing.behind_peer_s

    def _send_probe(self, now: float) -> None:
        """Silence is not death: unsubscribe and resubscribe one asset; the server answers
        with a fresh ``book``. Only no answer within ``probe_timeout_s`` reconnects."""
        assets = list(self.assets)
        asset = assets[self._probe_turn % len(assets)]
        self._probe_turn += 1
        self._probe = _Probe(asset, now, now + self.timing.probe_timeout_s)
        self.stats.probes["sent"] += 1
        self._control(protocol.unsubscribe([asset]), probe=True)
        self._control(protocol.subscribe([asset], custom_features=self.custom_features), probe=True)

    def _probe_result(self, now: float, data_age: float) -> None:
        probe = self._probe
        assert probe is not None
        if self._watchdog.last_data is not None and self._watchdog.last_data >= probe.sent_at:
            self.stats.probes["answered"] += 1
            self._probe = None
        elif now >= probe.deadline:
            self.stats.probes["unanswered"] += 1
            self._probe = None
            self._fire(NO_DATA, round(data_age, 3))

    def _fire(self, kind: str, silent_s: float) -> None:
        self.stats.stalls[kind] += 1
        self.stall_error = f"watchdog {kind}: silent for {silent_s:.1f}s"
        self.close_request = (1000, f"stall: {kind}")
        self._record(records.stall(self.clock.time_ns(), self.id, kind, silent_s))

    # ----- helpers -----

    def _control(self, text: str, *, probe: bool = False) -> None:
        record = records.sent(self.clock.time_ns(), self.id, text)
        if probe:  # not a change of the shard's assets: the asset stays subscribed
            record["probe"] = True
        self._record(record)
        self._outgoing.append(text)

    def _record(self, record: dict[str, Any]) -> None:
        self._records.append(record)
