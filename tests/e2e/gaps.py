"""Where the WAL says it may have missed frames, and whether a missing frame is explained.

A frame the exchange sent on one of its connections may be absent from the WAL only
inside a gap the WAL recorded for the capture connection at the other end: from its
``stall`` or abnormal ``conn_close`` to its next subscribe, or while the daemon was down
(from a SIGKILL until every connection subscribed again). A graceful shutdown drains
its connections, so it opens no gap.

Fake connections are paired with capture connections by the subscribe message: the
fake records what it received (``--record-received``), capture records what it ``sent``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# Frames already in the kernel when a connection died abruptly, and frames received but
# not yet fsynced at a SIGKILL (--flush-ms), are lost just before the gap is recorded.
IN_FLIGHT_NS = 1_000_000_000
# Longest plausible time from the fake's send to capture's receive on loopback.
MAX_DELIVERY_NS = 5_000_000_000
SHUTDOWN_REASON = "shutdown"  # capture's own close on SIGTERM; it drains, so no gap
FOREVER = 2**63

Window = tuple[int, int]


@dataclass
class Gaps:
    per_conn: dict[int, list[Window]] = field(default_factory=dict)
    daemon_down: list[Window] = field(default_factory=list)

    def explains(self, ts_ns: int, conn: int | None) -> bool:
        """Is ``ts_ns`` inside a gap of capture connection ``conn`` (None: of any)?"""
        if any(a <= ts_ns <= b for a, b in self.daemon_down):
            return True
        conns = list(self.per_conn) if conn is None else [conn]
        return any(a <= ts_ns <= b for c in conns for a, b in self.per_conn.get(c, []))


def find_gaps(records: Iterable[dict[str, Any]], kills: list[tuple[int, int]]) -> Gaps:
    """``records``: every WAL record in order; ``kills``: (killed_ns, restarted_ns)."""
    gaps = Gaps()
    open_gap: dict[int, int] = {}
    subscribes: list[tuple[int, int]] = []  # (ts, conn) of initial subscribe messages
    for record in records:
        kind, conn, ts = record["type"], record.get("conn"), record.get("ts_ns", 0)
        if conn is None or conn in open_gap:
            pass
        elif kind == "stall" or (kind == "conn_close" and record["reason"] != SHUTDOWN_REASON):
            open_gap[conn] = ts - IN_FLIGHT_NS
        if kind == "sent" and json.loads(record["text"]).get("type") == "market":
            subscribes.append((ts, conn))
            if conn in open_gap:
                gaps.per_conn.setdefault(conn, []).append((open_gap.pop(conn), ts))
    for conn, start in open_gap.items():
        gaps.per_conn.setdefault(conn, []).append((start, FOREVER))
    for killed, restarted in kills:
        after: dict[int, int] = {}
        for ts, conn in subscribes:
            if ts > restarted:
                after.setdefault(conn, ts)
        gaps.daemon_down.append((killed - IN_FLIGHT_NS, max(after.values(), default=FOREVER)))
    return gaps


def pair_connections(
    record_entries: Iterable[dict[str, Any]], wal_records: Iterable[dict[str, Any]]
) -> dict[int, int]:
    """Fake connection id -> capture connection id, by their initial subscribe message."""
    by_text = {r["text"]: r["conn"] for r in wal_records if r["type"] == "sent"}
    pairs = {}
    for entry in record_entries:
        text = entry.get("received")
        if text is not None and text in by_text and entry["conn"] not in pairs:
            pairs[entry["conn"]] = by_text[text]
    return pairs


def frame_key(entry: dict[str, Any]) -> str:
    return entry["text"] if "text" in entry else "b64:" + entry["b64"]


def unexplained(
    sent: Iterable[dict[str, Any]],
    wal_frames: Iterable[dict[str, Any]],
    gaps: Gaps,
    pairs: dict[int, int],
) -> tuple[list[dict[str, Any]], int]:
    """Sent frames missing from the WAL outside every gap, and how many were explained.

    Each WAL frame is matched to the latest unmatched frame with the same content that
    the fake sent on a connection paired with the same capture connection at or before
    its receive time (both clocks are this machine's), within MAX_DELIVERY_NS. Taking
    the latest one keeps identical frames (``PONG``) apart: a lost one stays unmatched
    instead of taking the next one's place."""
    sends: dict[tuple[int | None, str], list[dict[str, Any]]] = defaultdict(list)
    for entry in sent:
        sends[(pairs.get(entry["conn"]), frame_key(entry))].append(entry)
    received: dict[tuple[int, str], list[int]] = defaultdict(list)
    for frame in wal_frames:
        received[(frame["conn"], frame_key(frame))].append(frame["ts_ns"])
    matched: set[int] = set()
    for (conn, key), times in received.items():
        candidates = sorted(sends[(conn, key)] + sends[(None, key)], key=lambda e: e["ts_ns"])
        _match(sorted(times), candidates, matched)
    bad, explained = [], 0
    for entry in sent:
        if id(entry) in matched:
            continue
        if gaps.explains(entry["ts_ns"], pairs.get(entry["conn"])):
            explained += 1
        else:
            bad.append(entry)
    return bad, explained


def _match(times: list[int], candidates: list[dict[str, Any]], matched: set[int]) -> None:
    waiting: list[dict[str, Any]] = []  # sent at or before the current receive time
    i = 0
    for received_at in times:
        while i < len(candidates) and candidates[i]["ts_ns"] <= received_at:
            waiting.append(candidates[i])
            i += 1
        while waiting and id(waiting[-1]) in matched:  # unpaired sends are shared
            waiting.pop()
        if waiting and received_at - waiting[-1]["ts_ns"] <= MAX_DELIVERY_NS:
            matched.add(id(waiting.pop()))
