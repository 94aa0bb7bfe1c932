"""Which connection carries which asset. Pure bookkeeping: each asset on exactly one
connection, no connection above its limit, new assets first fill connections with room.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class Plan:
    """What to do for one change: subscribe on existing connections, open new ones,
    unsubscribe on existing ones. Lists keep a stable order."""

    add: dict[int, list[str]] = field(default_factory=dict)
    open: dict[int, list[str]] = field(default_factory=dict)
    remove: dict[int, list[str]] = field(default_factory=dict)


class Shards:
    """Assets per connection id. Connection ids are handed out from 0 and never reused."""

    def __init__(self, max_per_conn: int) -> None:
        if max_per_conn < 1:
            raise ValueError("max_per_conn must be at least 1")
        self.max_per_conn = max_per_conn
        self.conns: dict[int, list[str]] = {}
        self.owner: dict[str, int] = {}

    @property
    def assets(self) -> set[str]:
        return set(self.owner)

    def add(self, assets: Iterable[str]) -> Plan:
        """Place the assets not placed yet; returns where they went."""
        plan = Plan()
        todo = [a for a in dict.fromkeys(assets) if a not in self.owner]
        for conn, held in self.conns.items():
            if not todo:
                break
            room = self.max_per_conn - len(held)
            if room > 0:
                taken, todo = todo[:room], todo[room:]
                self._place(conn, taken)
                plan.add[conn] = taken
        while todo:
            taken, todo = todo[: self.max_per_conn], todo[self.max_per_conn :]
            conn = len(self.conns)
            self.conns[conn] = []
            self._place(conn, taken)
            plan.open[conn] = taken
        return plan

    def remove(self, assets: Iterable[str]) -> Plan:
        """Forget the assets; returns which connection each was on."""
        plan = Plan()
        for asset in dict.fromkeys(assets):
            conn = self.owner.pop(asset, None)
            if conn is not None:
                self.conns[conn].remove(asset)
                plan.remove.setdefault(conn, []).append(asset)
        return plan

    def _place(self, conn: int, assets: list[str]) -> None:
        self.conns[conn].extend(assets)
        for asset in assets:
            self.owner[asset] = conn
