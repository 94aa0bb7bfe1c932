"""Where the WAL says it may have missed frames, and whether a missing frame is explained.

A frame the exchange sent may be absent from the WAL only inside a recorded gap: on a
connection between its ``conn_close``/``stall`` and its next subscribe, or while the
daemon was down (from a kill until every connection subscribed again).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# Frames already handed to the kernel when a connection or the daemon died, and frames
# received but not yet fsynced at a SIGKILL (flush_ms), are lost just before the
# recorded gap starts.
IN_FLIGHT_NS = 1_000_000_000

# Longest plausible time from the exchange's send to capture's receive on loopback.
MAX_DELIVERY_NS = 5_000_000_000

Window = tuple[int, int]


@dataclass
class Gaps:
    per_conn: dict[int, list[Window]] = field(default_factory=dict)
    daemon_down: list[Window] = field(default_factory=list)
    owner: dict[str, list[tuple[int, int | None]]] = field(
        default_factory=dict
    )  # asset -> (ts, conn)

    def explains(self, ts_ns: int, assets: list[str]) -> bool:
        if any(a <= ts_ns <= b for a, b in self.daemon_down):
            return True
        conns = {self._owner_at(asset, ts_ns) for asset in assets} if assets else set(self.per_conn)
        return any(
            a <= ts_ns <= b for c in conns if c is not None for a, b in self.per_conn.get(c, [])
        )

    def _owner_at(self, asset: str, ts_ns: int) -> int | None:
        current = None
        for ts, conn in self.owner.get(asset, []):
            if ts > ts_ns:
                break
            current = conn
        return current


def find_gaps(records: Iterable[dict[str, Any]], kills: list[tuple[int, int]]) -> Gaps:
    """``records``: every WAL record in order; ``kills``: (killed_ns, restarted_ns) of capture."""
    gaps = Gaps()
    open_gap: dict[int, int] = {}
    subscribes: list[tuple[int, int]] = []  # (ts, conn) of initial subscribe messages
    for record in records:
        kind, conn, ts = record["type"], record.get("conn"), record.get("ts_ns", 0)
        if kind in ("conn_close", "stall") and conn not in open_gap:
            open_gap[conn] = ts - IN_FLIGHT_NS
        elif kind == "sent":
            message = json.loads(record["text"])
            assets = message.get("assets_ids", [])
            gone = message.get("operation") == "unsubscribe"
            for asset in assets:
                gaps.owner.setdefault(asset, []).append((ts, None if gone else conn))
            if message.get("type") == "market":
                subscribes.append((ts, conn))
                if conn in open_gap:
                    gaps.per_conn.setdefault(conn, []).append((open_gap.pop(conn), ts))
    for conn, start in open_gap.items():
        gaps.per_conn.setdefault(conn, []).append((start, 2**63))
    for killed, restarted in kills:
        after = {}
        for ts, conn in subscribes:
            if ts > restarted:
                after.setdefault(conn, ts)
        gaps.daemon_down.append((killed - IN_FLIGHT_NS, max(after.values(), default=2**63)))
    return gaps


def frame_key(entry: dict[str, Any]) -> str:
    return entry["text"] if "text" in entry else "b64:" + entry["b64"]


def assets_of(text: str) -> list[str]:
    try:
        payload = json.loads(text)
    except ValueError:
        return []
    events = payload if isinstance(payload, list) else [payload]
    out = []
    for event in events:
        if not isinstance(event, dict) or event.get("event_type") == "new_market":
            continue
        if isinstance(event.get("asset_id"), str):
            out.append(event["asset_id"])
        for change in event.get("price_changes") or []:
            if isinstance(change, dict) and isinstance(change.get("asset_id"), str):
                out.append(change["asset_id"])
    return out


def unexplained(
    sent: Iterable[dict[str, Any]], wal_frames: Iterable[dict[str, Any]], gaps: Gaps
) -> tuple[list[dict[str, Any]], int]:
    """Sent frames missing from the WAL outside every gap, and how many were explained.

    A sent frame is matched to the earliest unmatched WAL frame with the same content
    received at or after its send time (both clocks are this machine's), within
    MAX_DELIVERY_NS. Identical frames (``PONG``) thus match the right occurrence."""
    received: dict[str, deque[int]] = {}
    for f in sorted(wal_frames, key=lambda f: f["ts_ns"]):
        received.setdefault(frame_key(f), deque()).append(f["ts_ns"])
    bad, explained = [], 0
    for entry in sorted(sent, key=lambda e: e["ts_ns"]):
        queue = received.get(frame_key(entry), deque())
        while queue and queue[0] < entry["ts_ns"]:
            queue.popleft()  # received before this was sent: belongs to an earlier send
        if queue and queue[0] <= entry["ts_ns"] + MAX_DELIVERY_NS:
            queue.popleft()
        elif gaps.explains(entry["ts_ns"], assets_of(entry.get("text") or "")):
            explained += 1
        else:
            bad.append(entry)
    return bad, explained
