"""A WAL of one shard on two replicas (``capture run --redundancy 2``), for the loader.

Every trade event reaches both replicas (replica 1 a millisecond later); every 25th
frame holds two identical fills. Each replica drops and reconnects in given windows
(never both, unless ``both_down`` says so). Segments are cut by time, so copies of one
trade fall on both sides of a segment boundary, and a both-down window spans one.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.loader.helpers import (
    ASSET,
    BASE_NS,
    TradeKey,
    opened,
    subscribed,
    trade_event,
    trade_key,
    write_segment,
)
from wal.records import Record, conn_close, frame

MS = 1_000_000
TRADE_SPACING_NS = 10 * MS
REPLICA_LAG_NS = 1 * MS  # replica 1 receives each event this much after replica 0
SEGMENT_NS = 700 * MS  # with events every 10 ms: boundaries between the copies of 70, 140...
BOUNDARY_OFFSET_NS = MS // 2
RECORDS_PER_BATCH = 5
SHARD_ASSETS = [f"{ASSET[:-4]}{k:04d}" for k in range(7)]  # trade_event's assets
DOUBLE_EVERY = 25  # these frames hold two identical fills


@dataclass
class ReplicaWal:
    trades: Counter[TradeKey] = field(default_factory=Counter)  # what must load, once
    gaps: list[tuple[int, int]] = field(default_factory=list)  # (started_ns, ended_ns)
    paths: list[Path] = field(default_factory=list)


def event_ns(i: int) -> int:
    return BASE_NS + i * TRADE_SPACING_NS


def build(
    wal_dir: Path,
    *,
    trades: int = 300,
    down: tuple[tuple[int, int, int], ...] = ((0, 40, 60), (1, 100, 130), (0, 160, 175)),
    both_down: tuple[int, int] | None = None,
) -> ReplicaWal:
    """``down``: (replica, first event missed, first event seen again)."""
    wal = ReplicaWal()
    records: list[Record] = []
    windows = [*down, *([(0, *both_down), (1, *both_down)] if both_down else [])]
    for replica in (0, 1):
        records += [
            opened(BASE_NS - 1000 * MS + replica * MS, replica, 0, replica),
            subscribed(BASE_NS - 900 * MS + replica * MS, replica, SHARD_ASSETS),
        ]
        for r, first, again in windows:
            if r == replica:
                close_ns = event_ns(first) - 3 * MS + replica * MS // 2
                open_ns = event_ns(again) - 3 * MS + replica * MS // 2
                records.append(conn_close(close_ns, replica, "u", 1006, ""))
                records.append(opened(open_ns, replica, 0, replica))
                records.append(subscribed(open_ns + 1, replica, SHARD_ASSETS))
                if both_down and (first, again) == both_down and replica == 1:
                    wal.gaps.append((close_ns, event_ns(again) - 3 * MS + 1))
    counters = [0, 0]
    for i in range(trades):
        event = trade_event(i)
        events = [event, event] if i % DOUBLE_EVERY == 0 else [event]
        seen = False
        for replica in (0, 1):
            if any(r == replica and a <= i < b for r, a, b in windows):
                continue
            ts = event_ns(i) + replica * REPLICA_LAG_NS
            records.append(frame(ts, replica, counters[replica], json.dumps(events)))
            counters[replica] += 1
            seen = True
        if seen:
            wal.trades.update(trade_key(e) for e in events)
    records.sort(key=lambda r: r["ts_ns"])
    by_segment: dict[int, list[Record]] = {}
    for record in records:
        seq = (record["ts_ns"] - BASE_NS - BOUNDARY_OFFSET_NS) // SEGMENT_NS + 1
        by_segment.setdefault(max(seq, 0), []).append(record)
    for seq in range(max(by_segment) + 1):
        part = by_segment.get(seq, [])
        batches = [part[k : k + RECORDS_PER_BATCH] for k in range(0, len(part), RECORDS_PER_BATCH)]
        wal.paths.append(write_segment(wal_dir, seq, batches))
    return wal
