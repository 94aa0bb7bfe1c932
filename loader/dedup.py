"""Each trade once across the replicas of a shard. Pure: values in, values out.

With ``capture run --redundancy N`` every shard's assets are subscribed on N connections
(replicas), so every trade arrives up to N times. The feed has no trade id, and two
identical fills in one transaction are real and must stay two rows. The rule:

    Identical trade events (same asset, market, timestamp, price, size, side, fee rate
    and transaction hash) that the replicas of one shard receive close together in time
    (within WINDOW_NS of the first of them) make as many rows as the largest number of
    them that any single replica delivered.

So a trade both replicas saw is one row, two identical fills are two rows (each replica
saw two), and a trade only one replica saw (the other was down) is one row.

How it is computed, streaming: the first event of an identity in a shard opens a group
(its start is that event's receive time). Every later identical event of that shard
received within WINDOW_NS of the start joins it: the group counts events per replica,
and an event is kept (becomes a row) exactly when its replica's count exceeds the rows
the group has made so far. When the window has passed the group is finished; the next
identical event opens a new one. Rows made = max over replicas of their count: the rule.

Why this gives exactly-once and reparse stability: the decision for an event depends
only on the events before it in WAL order, through the groups. The groups are part of
the state the loader commits with every offset (``loader.carry``) and hands from one
segment to the next, so a resume after SIGKILL, a reparse of one segment and a load
from scratch all see the same groups at every record: the same rows, whichever segment
(or transaction) the replicas' copies fall in. A reparse of segment X rebuilds X's rows
from the state X started with, so a row X "stood for" (a later copy was dropped because
X's copy came first) comes back with X. Groups are pruned (those no later event in
receive order can join) only at zstd-frame boundaries, which do not move between runs.

A shard is only deduplicated once one of its connections says ``replica >= 1``; until
then (N = 1, or WAL from before redundancy) rows pass untouched, with no per-row work.
A second replica cannot deliver an event that arrived before it opened: it subscribes
after its ``conn_open`` and the feed does not replay.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loader.parse import TradeRow

# Replicas get the same event within milliseconds; a minute absorbs a lagging replica
# (GC pause, slow disk on the exchange side) without merging genuinely separate events,
# which cannot be identical anyway: identity includes the exchange's ms timestamp.
WINDOW_NS = 60 * 1_000_000_000

Identity = tuple[Any, ...]


def identity(row: TradeRow) -> Identity:
    """What makes two trade events identical (JSON-safe: the state is stored as JSON)."""
    fee = None if row.fee_rate_bps is None else str(row.fee_rate_bps)
    return (
        row.ts.isoformat(),
        row.token_id,
        row.market,
        row.side,
        row.price,
        row.size,
        fee,
        row.transaction_hash,
    )


@dataclass
class Group:
    """Identical events of one shard within a window: start, rows made, count per replica."""

    start_ns: int
    rows: int = 0
    counts: dict[int, int] = field(default_factory=dict)


class Dedup:
    """The open groups of every redundant shard."""

    def __init__(self) -> None:
        self.groups: dict[tuple[str, Identity], Group] = {}

    def keep(self, shard: str, replica: int, ident: Identity, received_ns: int) -> bool:
        """Whether this event, received by ``replica`` of ``shard``, becomes a row."""
        key = (shard, ident)
        group = self.groups.get(key)
        if group is None or received_ns - group.start_ns > WINDOW_NS:
            group = self.groups[key] = Group(received_ns)
        seen = group.counts.get(replica, 0) + 1
        group.counts[replica] = seen
        if seen > group.rows:
            group.rows = seen
            return True
        return False

    def prune(self, now_ns: int) -> None:
        """Forget groups no event at ``now_ns`` or later can join."""
        if self.groups:
            limit = now_ns - WINDOW_NS
            self.groups = {k: g for k, g in self.groups.items() if g.start_ns >= limit}

    def to_json(self) -> list[Any]:
        return [
            [shard, list(ident), g.start_ns, g.rows, [[r, n] for r, n in g.counts.items()]]
            for (shard, ident), g in self.groups.items()
        ]

    @classmethod
    def from_json(cls, value: list[Any]) -> Dedup:
        dedup = cls()
        for shard, ident, start, rows, counts in value:
            dedup.groups[(shard, tuple(ident))] = Group(start, rows, {r: n for r, n in counts})
        return dedup
