"""Per batch of parsed records: which trade rows to keep, which gaps ended. Pure.

``Coverage`` joins the lifecycle tracker (:mod:`loader.gaps`) and the replica rule
(:mod:`loader.dedup`) and walks a :class:`~loader.parse.BatchResult` in record order:
the non-frame records and the frames that gave rows, interleaved by their position. A
batch of a WAL whose shards have one replica each keeps its rows as they are, with no
per-row work. Its whole state is one JSON value that the loader commits with each
offset (:mod:`loader.carry`).
"""

from __future__ import annotations

from typing import Any

from loader.dedup import Dedup, identity
from loader.gaps import Gap, Tracker
from loader.parse import BatchResult, TradeRow

STATE_VERSION = 1  # of the JSON below; a state of another version is not reused


class Coverage:
    """The carried state of one WAL: connections, open gaps, replica groups."""

    def __init__(self, tracker: Tracker | None = None, dedup: Dedup | None = None) -> None:
        self.tracker = tracker or Tracker()
        self.dedup = dedup or Dedup()
        self.changed = True  # since the last save, beyond last_ns

    def feed(self, result: BatchResult) -> tuple[list[TradeRow], list[Gap]]:
        """The rows of ``result`` to load and the gaps its records ended."""
        tracker, gaps = self.tracker, []
        if result.others:
            self.changed = True
        if not tracker.redundant and not any(_second_replica(r) for _p, r in result.others):
            for _pos, record in result.others:
                gaps.extend(tracker.feed(record))
            rows = result.rows
        else:
            rows = self._deduplicated(result, gaps)
        tracker.see(result.last_frame_ns)
        return rows, gaps

    def _deduplicated(self, result: BatchResult, gaps: list[Gap]) -> list[TradeRow]:
        tracker, dedup, rows = self.tracker, self.dedup, result.rows
        kept: list[TradeRow] = []
        others, o = result.others, 0
        sources = result.sources
        for s, (start, conn, ts_ns) in enumerate(sources):
            while o < len(others) and others[o][0] <= start:
                gaps.extend(tracker.feed(others[o][1]))
                o += 1
            end = sources[s + 1][0] if s + 1 < len(sources) else len(rows)
            shard, replica = tracker.carrier(conn)
            if shard not in tracker.redundant:
                kept.extend(rows[start:end])
                continue
            self.changed = True
            kept.extend(
                row for row in rows[start:end] if dedup.keep(shard, replica, identity(row), ts_ns)
            )
        for _pos, record in others[o:]:
            gaps.extend(tracker.feed(record))
        if result.last_frame_ns is not None:
            dedup.prune(result.last_frame_ns)
        return kept

    def open_gaps(self) -> list[Gap]:
        return self.tracker.open_gaps()

    @property
    def last_ns(self) -> int:
        return self.tracker.last_ns

    def to_json(self) -> dict[str, Any]:
        return {
            "v": STATE_VERSION,
            "tracker": self.tracker.to_json(),
            "dedup": self.dedup.to_json(),
        }

    @classmethod
    def from_json(cls, value: Any) -> Coverage:
        if not isinstance(value, dict) or value.get("v") != STATE_VERSION:
            return cls()
        return cls(Tracker.from_json(value["tracker"]), Dedup.from_json(value["dedup"]))


def _second_replica(record: dict[str, Any]) -> bool:
    """A ``conn_open`` that makes its shard redundant (its rows from here are deduplicated)."""
    replica = record.get("replica")
    return record.get("type") == "conn_open" and isinstance(replica, int) and replica >= 1
