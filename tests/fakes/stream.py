"""Deterministic, seeded market data shaped like tests/data/realframes.jsonl (pure, no I/O).

Frames vary the way live ones do: single objects and arrays (of trades, price changes
and best bid/asks), ``", "`` separators in some, unpadded prices (``".48"``),
``fee_rate_bps`` as ``"0"``, ``""`` or absent, ``transaction_hash`` sometimes ``""``.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

BASE_TS_MS = 1_786_728_432_337  # timestamps near the live captures in realframes
TICK = "0.01"


@dataclass
class Market:
    id: str
    condition_id: str
    tokens: list[str]
    question: str
    slug: str
    active: bool = True
    closed: bool = False
    revision: int = 0  # bumped by revise(): Gamma's object for the market changes

    def revise(self) -> None:
        """Change the market's Gamma object, as Gamma's edits and end dates do."""
        self.revision += 1

    def gamma(self) -> dict[str, Any]:
        """As Gamma lists it: ``clobTokenIds`` is a JSON-encoded string."""
        question = self.question + (f" (revision {self.revision})" if self.revision else "")
        return {
            "id": self.id,
            "question": question,
            "conditionId": self.condition_id,
            "slug": self.slug,
            "active": self.active,
            "closed": self.closed,
            "clobTokenIds": json.dumps(self.tokens),
            "outcomes": json.dumps(["Yes", "No"]),
            "endDate": f"2026-12-{1 + self.revision % 28:02d}T12:00:00Z",
            "events": [{"slug": f"{self.slug}-event"}],
        }


def _dumps(obj: Any, rng: random.Random) -> str:
    # live captures differ in whitespace; nothing may depend on the byte layout
    return json.dumps(obj) if rng.random() < 0.2 else json.dumps(obj, separators=(",", ":"))


def _price(rng: random.Random) -> str:
    return _cents(rng.randint(1, 99), rng)


def _cents(cents: int, rng: random.Random) -> str:
    text = f"{cents / 100:.2f}".rstrip("0")
    return text[1:] if rng.random() < 0.1 else text  # ".48" happens live


def _quote(rng: random.Random) -> tuple[str, str, str]:
    """(best bid, best ask, spread): the bid below the ask, as in a live book."""
    bid = rng.randint(1, 97)
    spread = rng.randint(1, 2)
    return _cents(bid, rng), _cents(bid + spread, rng), f"{spread / 100:.2f}"


@dataclass
class Universe:
    """Markets (two tokens each) and a frame generator, all from one seed."""

    seed: int
    markets: list[Market] = field(default_factory=list)
    by_token: dict[str, Market] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.ts = BASE_TS_MS

    def add_markets(self, count: int) -> list[Market]:
        made = []
        for _ in range(count):  # one by one: each market's number (and id) is its own
            market = self._market()
            made.append(market)
            self.markets.append(market)
            for token in market.tokens:
                self.by_token[token] = market
        return made

    def tokens(self) -> list[str]:
        return [t for m in self.markets for t in m.tokens]

    def _market(self) -> Market:
        r = self.rng
        number = len(self.markets) + 1
        return Market(
            id=str(500_000 + number),
            condition_id="0x" + f"{r.getrandbits(256):064x}",
            tokens=[str(r.getrandbits(252) | (1 << 251)) for _ in range(2)],
            question=f"Will fake event {number} happen?",
            slug=f"fake-event-{number}",
        )

    def _tick(self) -> str:
        self.ts += self.rng.randint(0, 40)
        return str(self.ts)

    def book(self, token: str) -> dict[str, Any]:
        r = self.rng
        market = self.by_token[token]
        mid = r.randint(5, 95)
        bids = [
            {"price": f"{p / 100:g}", "size": str(r.randint(1, 50000))} for p in range(mid - 3, mid)
        ]
        asks = [
            {"price": f"{p / 100:g}", "size": f"{r.randint(1, 9000)}.{r.randint(0, 99):02d}"}
            for p in range(mid + 4, mid + 1, -1)
        ]
        return {
            "market": market.condition_id,
            "asset_id": token,
            "timestamp": self._tick(),
            "hash": f"{r.getrandbits(160):040x}",
            "bids": bids,
            "asks": asks,
            "tick_size": TICK,
            "event_type": "book",
            "last_trade_price": r.choice([_price(r), ""]),
        }

    def dump(self, tokens: list[str]) -> str:
        """The initial dump: one ``book`` per known token, in one array frame."""
        return _dumps([self.book(t) for t in tokens if t in self.by_token], self.rng)

    def trade(self, token: str) -> dict[str, Any]:
        r = self.rng
        event: dict[str, Any] = {
            "market": self.by_token[token].condition_id,
            "asset_id": token,
            "price": _price(r),
            "size": f"{r.randint(1, 500)}.{r.randint(0, 99)}",
            "side": r.choice(["BUY", "SELL"]),
            "timestamp": self._tick(),
            "event_type": "last_trade_price",
            "transaction_hash": r.choice(["0x" + f"{r.getrandbits(256):064x}"] * 4 + [""]),
        }
        fee = r.random()
        if fee < 0.7:
            event["fee_rate_bps"] = "0"
        elif fee < 0.85:
            event["fee_rate_bps"] = ""
        return event

    def price_change(self, token: str) -> dict[str, Any]:
        r = self.rng
        market = self.by_token[token]
        changes = []
        for t in market.tokens[: r.randint(1, 2)]:
            bid, ask, _spread = _quote(r)
            changes.append(
                {
                    "asset_id": t,
                    "price": _price(r),
                    "size": r.choice(["0", str(r.randint(1, 900))]),
                    "side": r.choice(["BUY", "SELL"]),
                    "hash": f"{r.getrandbits(160):040x}",
                    "best_bid": bid,
                    "best_ask": ask,
                }
            )
        return {
            "market": market.condition_id,
            "price_changes": changes,
            "timestamp": self._tick(),
            "event_type": "price_change",
        }

    def other(self, token: str, custom: bool) -> dict[str, Any]:
        r = self.rng
        market = self.by_token[token]
        if custom and r.random() < 0.7:
            bid, ask, spread = _quote(r)
            return {
                "market": market.condition_id,
                "asset_id": token,
                "best_bid": bid,
                "best_ask": ask,
                "spread": spread,
                "timestamp": self._tick(),
                "event_type": "best_bid_ask",
            }
        return {
            "asset_id": token,
            "event_type": "tick_size_change",
            "market": market.condition_id,
            "new_tick_size": "0.001",
            "old_tick_size": TICK,
            "timestamp": self._tick(),
        }

    def frame(self, tokens: list[str], trade_fraction: float, custom: bool) -> str:
        """One data frame about some of ``tokens``: a trade with ``trade_fraction``
        probability, else a price change, best bid/ask or tick size change. Like live
        batches, a fifth of the trades, price changes and best bid/asks come as arrays."""
        r = self.rng
        token = r.choice(tokens)
        roll = r.random()
        if roll < trade_fraction:
            make = self.trade
        elif roll < trade_fraction + (1 - trade_fraction) * 0.8:
            make = self.price_change
        else:
            event = self.other(token, custom)
            if event["event_type"] != "best_bid_ask" or r.random() >= 0.2:
                return _dumps(event, r)
            batch = [event, *(self.other(r.choice(tokens), True) for _ in range(r.randint(1, 2)))]
            return _dumps([e for e in batch if e["event_type"] == "best_bid_ask"], r)
        if r.random() < 0.2:  # batched events arrive as arrays
            return _dumps([make(r.choice(tokens)) for _ in range(r.randint(2, 3))], r)
        return _dumps(make(token), r)

    def new_market(self, market: Market) -> str:
        event = {
            "id": market.id,
            "question": market.question,
            "market": market.condition_id,
            "slug": market.slug,
            "description": "A fake market.",
            "assets_ids": market.tokens,
            "outcomes": ["Yes", "No"],
            "timestamp": self._tick(),
            "event_type": "new_market",
        }
        return _dumps(event, self.rng)

    def market_resolved(self, market: Market) -> str:
        """``market_resolved``: the ``new_market`` fields plus the winner."""
        event = json.loads(self.new_market(market))
        event.update(
            event_type="market_resolved",
            winning_asset_id=market.tokens[0],
            winning_outcome="Yes",
            event_message=None,
            timestamp=self._tick(),
        )
        return _dumps(event, self.rng)

    def fork(self, seed: int) -> Universe:
        """Same markets, its own random stream (one per connection keeps each one's
        frames reproducible whatever the interleaving)."""
        return Universe(seed, self.markets, self.by_token)
