"""Gaps in coverage, from the WAL's lifecycle records. Pure: records in, gaps out.

A gap is a span in which no connection carried some assets, so trades of those assets
may be missing. Per shard (the connections that carry the same assets: the replicas of
``capture run --redundancy N``; a ``conn`` of a WAL without ``shard`` fields is its own
shard with one replica):

- a connection carries its assets from its initial subscribe (a ``sent`` record with
  ``"type": "market"``) until its ``stall``, its ``conn_close`` (unless the reason is
  ``shutdown``: a graceful stop drains and loses nothing), or a crash of capture;
- a shard's gap opens when its last carrying replica stops carrying, and ends at the
  next initial subscribe of any of its replicas. A span a sibling covered is no gap.
  ``token_ids`` are the assets of the replica that stopped last; ``cause`` says why
  (``stall no_data``, ``close 1006``, ``close 1000 stall: no_pong``, ...);
- a crash (a ``seal`` with ``recovered: true``) ends every connection: each shard that
  was carried gets a ``capture_down`` gap from the last record before that seal to the
  next subscribe of the same shard (by the restarted daemon);
- a ``dropped`` record (frames lost to backpressure, connection unknown) is a gap of
  every carried asset from the record before it to itself.

``Tracker`` is the whole state; it is carried from segment to segment as JSON
(``to_json``/``from_json``), so a gap may open in one segment and end in a later one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

SHUTDOWN_REASON = "shutdown"  # capture's own close on SIGTERM: it drains, so no gap
CAPTURE_DOWN = "capture_down"
DROPPED_SHARD = "dropped"  # the shard of a gap made by a ``dropped`` record


@dataclass(frozen=True)
class Gap:
    """A span without coverage; ``ended_ns`` None while it is still open."""

    shard: str
    started_ns: int
    ended_ns: int | None
    token_ids: tuple[str, ...]
    cause: str


@dataclass
class OpenGap:
    started_ns: int
    token_ids: list[str]
    cause: str


@dataclass
class Tracker:
    """Who carries what, and the open gaps. Feed it every non-frame record in order."""

    conns: dict[int, list[Any]] = field(default_factory=dict)  # conn -> [shard, replica]
    assets: dict[int, list[str]] = field(default_factory=dict)  # conn -> subscribed
    carrying: dict[int, bool] = field(default_factory=dict)  # conn -> carries now
    redundant: set[str] = field(default_factory=set)  # shards seen with replica >= 1
    open: dict[str, OpenGap] = field(default_factory=dict)  # shard -> its open gap
    last_ns: int = 0  # the last record seen (a crash's gap starts there)

    def carrier(self, conn: int) -> tuple[str, int]:
        """``(shard, replica)`` of a connection; an unknown one is its own shard."""
        known = self.conns.get(conn)
        return (known[0], known[1]) if known else (f"c{conn}", 0)

    def feed(self, record: dict[str, Any]) -> list[Gap]:
        """Apply one record; return the gaps it closed (or, for ``dropped``, made)."""
        kind = record.get("type")
        ts = record.get("ts_ns")
        if not isinstance(ts, int):
            return []
        conn = record.get("conn")
        done: list[Gap] = []
        if kind == "conn_open" and isinstance(conn, int):
            self._opened(conn, record)
        elif kind == "sent" and isinstance(conn, int) and record.get("probe") is not True:
            # A liveness probe's unsubscribe + subscribe of one asset keeps it subscribed.
            done = self._sent(conn, ts, record.get("text"))
        elif kind == "stall" and isinstance(conn, int):
            self._stop(conn, ts, f"stall {record.get('kind')}")
        elif kind == "conn_close" and isinstance(conn, int):
            if record.get("reason") == SHUTDOWN_REASON:
                self.carrying[conn] = False
            else:
                code = record.get("code")
                self._stop(conn, ts, f"close {code} {record.get('reason') or ''}".strip())
        elif kind == "dropped":
            done = self._dropped(ts, record)
        elif kind == "seal":
            if record.get("recovered"):
                self._crashed()
            return done  # its time is the recovery's, not the capture's
        self.see(ts)
        return done

    def see(self, ts_ns: int | None) -> None:
        if ts_ns is not None and ts_ns > self.last_ns:
            self.last_ns = ts_ns

    def open_gaps(self) -> list[Gap]:
        return [
            Gap(shard, g.started_ns, None, tuple(g.token_ids), g.cause)
            for shard, g in sorted(self.open.items())
        ]

    def _opened(self, conn: int, record: dict[str, Any]) -> None:
        shard, replica = record.get("shard"), record.get("replica")
        if isinstance(shard, int) and isinstance(replica, int):
            self.conns[conn] = [f"s{shard}", replica]
            if replica >= 1:
                self.redundant.add(f"s{shard}")
        else:
            self.conns.pop(conn, None)
        self.carrying[conn] = False

    def _sent(self, conn: int, ts: int, text: Any) -> list[Gap]:
        try:
            message = json.loads(text) if isinstance(text, str) else None
        except ValueError:
            return []
        if not isinstance(message, dict):
            return []
        ids = [a for a in message.get("assets_ids") or [] if isinstance(a, str)]
        if message.get("type") == "market":
            self.assets[conn] = sorted(set(ids))
            self.carrying[conn] = True
            shard = self.carrier(conn)[0]
            gap = self.open.pop(shard, None)
            if gap is not None:
                return [Gap(shard, gap.started_ns, ts, tuple(gap.token_ids), gap.cause)]
        elif message.get("operation") == "subscribe":
            self.assets[conn] = sorted(set(self.assets.get(conn, [])) | set(ids))
        elif message.get("operation") == "unsubscribe":
            self.assets[conn] = sorted(set(self.assets.get(conn, [])) - set(ids))
        return []

    def _stop(self, conn: int, ts: int, cause: str) -> None:
        if not self.carrying.get(conn):
            return  # already down (a stall's close, a failed reconnect)
        self.carrying[conn] = False
        shard = self.carrier(conn)[0]
        if shard not in self.open and not self._carried(shard):
            self.open[shard] = OpenGap(ts, list(self.assets.get(conn, [])), cause)

    def _carried(self, shard: str) -> bool:
        return any(up and self.carrier(c)[0] == shard for c, up in self.carrying.items())

    def _crashed(self) -> None:
        by_shard: dict[str, set[str]] = {}
        for conn, up in self.carrying.items():
            if up:
                by_shard.setdefault(self.carrier(conn)[0], set()).update(self.assets.get(conn, []))
        for shard, tokens in by_shard.items():
            if shard not in self.open:
                self.open[shard] = OpenGap(self.last_ns, sorted(tokens), CAPTURE_DOWN)
        # The restarted daemon numbers its connections afresh.
        self.conns, self.assets, self.carrying = {}, {}, {}

    def _dropped(self, ts: int, record: dict[str, Any]) -> list[Gap]:
        tokens = sorted(
            {a for c, up in self.carrying.items() if up for a in self.assets.get(c, [])}
        )
        cause = f"dropped {record.get('count')} ({record.get('reason')})"
        return [Gap(DROPPED_SHARD, self.last_ns or ts, ts, tuple(tokens), cause)]

    def to_json(self) -> dict[str, Any]:
        return {
            "conns": [[c, s] for c, s in self.conns.items()],
            "assets": [[c, a] for c, a in self.assets.items()],
            "carrying": [[c, up] for c, up in self.carrying.items()],
            "redundant": sorted(self.redundant),
            "open": [[s, g.started_ns, g.token_ids, g.cause] for s, g in self.open.items()],
            "last_ns": self.last_ns,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Tracker:
        return cls(
            conns={c: s for c, s in value["conns"]},
            assets={c: a for c, a in value["assets"]},
            carrying={c: up for c, up in value["carrying"]},
            redundant=set(value["redundant"]),
            open={s: OpenGap(start, tokens, cause) for s, start, tokens, cause in value["open"]},
            last_ns=value["last_ns"],
        )
