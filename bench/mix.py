"""The realistic mix of the scan benchmarks: about 5% trades, the rest order-book frames
(books of 8 levels a side, price changes of two entries) shaped like the real ones."""

from __future__ import annotations

import json
import random

TRADE_SHARE = 0.05  # the "realistic mix": about 5% trades
BASE_NS = 1_786_728_467_000_000_000


def trade_text(i: int, rng: random.Random) -> str:
    return json.dumps(
        {
            "asset_id": str(10**76 + rng.randrange(2000)),
            "event_type": "last_trade_price",
            "fee_rate_bps": "0",
            "market": f"0x{rng.randrange(16**64):064x}",
            "price": f"0.{rng.randrange(1, 1000):03d}",
            "side": rng.choice(("BUY", "SELL")),
            "size": f"{rng.randrange(1, 100000) / 100}",
            "timestamp": str(BASE_NS // 1_000_000 + i),
            "transaction_hash": f"0x{rng.randrange(16**64):064x}",
        },
        separators=(",", ":"),
    )


def book_text(i: int, rng: random.Random) -> str:
    levels = [{"price": f"0.{p:02d}", "size": str(rng.randrange(1, 99999))} for p in range(1, 9)]
    return json.dumps(
        {
            "market": f"0x{rng.randrange(16**64):064x}",
            "asset_id": str(10**76 + rng.randrange(2000)),
            "timestamp": str(BASE_NS // 1_000_000 + i),
            "hash": f"{rng.randrange(16**40):040x}",
            "bids": levels,
            "asks": levels[::-1],
            "tick_size": "0.01",
            "event_type": "book",
            "last_trade_price": "0.140",
        },
        separators=(",", ":"),
    )


def price_change_text(i: int, rng: random.Random) -> str:
    change = {
        "asset_id": str(10**76 + rng.randrange(2000)),
        "price": "0.5",
        "size": "200",
        "side": "BUY",
        "hash": f"{rng.randrange(16**40):040x}",
        "best_bid": "0.5",
        "best_ask": "0.51",
    }
    return json.dumps(
        {
            "market": f"0x{rng.randrange(16**64):064x}",
            "price_changes": [change, dict(change, side="SELL")],
            "timestamp": str(BASE_NS // 1_000_000 + i),
            "event_type": "price_change",
        },
        separators=(",", ":"),
    )


def mix_texts(count: int, seed: int = 1) -> list[str]:
    """``count`` frame texts of the mix, deterministic for ``seed``."""
    rng = random.Random(seed)
    makers = [price_change_text, book_text]
    return [
        trade_text(i, rng) if rng.random() < TRADE_SHARE else rng.choice(makers)(i, rng)
        for i in range(count)
    ]
