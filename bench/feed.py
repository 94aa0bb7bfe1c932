"""Deterministic, realistic market-channel frames for benchmarks (shapes of PROTOCOL.md)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator


def _token(rng: random.Random) -> str:
    return str(rng.getrandbits(252))


def _market(rng: random.Random) -> str:
    return "0x" + rng.getrandbits(256).to_bytes(32, "big").hex()


def _price(rng: random.Random) -> str:
    return f"{rng.randint(1, 999) / 1000:.3f}".rstrip("0")


def frames(
    count: int,
    seed: int = 1,
    trade_share: float = 0.2,
    *,
    assets: int = 200,
    mean_gap_ms: int = 20,
) -> Iterator[str]:
    """``count`` frame texts: price_change, last_trade_price, best_bid_ask, book (~400 B avg).

    ``assets`` (token, market) pairs; event times ``mean_gap_ms`` apart on average.
    """
    rng = random.Random(seed)
    pairs = [(_token(rng), _market(rng)) for _ in range(assets)]
    ts = 1_786_728_432_337
    for _ in range(count):
        ts += rng.randint(0, 2 * mean_gap_ms)
        asset, market = rng.choice(pairs)
        roll = rng.random()
        if roll < trade_share:
            event = {
                "market": market,
                "asset_id": asset,
                "price": _price(rng),
                "size": f"{rng.randint(1, 500000) / 100}",
                "fee_rate_bps": "0",
                "side": rng.choice(("BUY", "SELL")),
                "timestamp": str(ts),
                "event_type": "last_trade_price",
                "transaction_hash": "0x" + rng.getrandbits(256).to_bytes(32, "big").hex(),
            }
        elif roll < 0.8:
            event = {
                "market": market,
                "price_changes": [
                    {
                        "asset_id": asset,
                        "price": _price(rng),
                        "size": str(rng.randint(0, 9000)),
                        "side": rng.choice(("BUY", "SELL")),
                        "hash": rng.getrandbits(160).to_bytes(20, "big").hex(),
                        "best_bid": _price(rng),
                        "best_ask": _price(rng),
                    }
                ],
                "timestamp": str(ts),
                "event_type": "price_change",
            }
        elif roll < 0.97:
            event = {
                "market": market,
                "asset_id": asset,
                "best_bid": _price(rng),
                "best_ask": _price(rng),
                "spread": "0.002",
                "timestamp": str(ts),
                "event_type": "best_bid_ask",
            }
        else:
            levels = [{"price": _price(rng), "size": str(rng.randint(1, 99999))} for _ in range(8)]
            event = {
                "market": market,
                "asset_id": asset,
                "timestamp": str(ts),
                "hash": rng.getrandbits(160).to_bytes(20, "big").hex(),
                "bids": levels[:4],
                "asks": levels[4:],
                "tick_size": "0.001",
                "event_type": "book",
                "last_trade_price": _price(rng),
            }
        yield json.dumps(event, separators=(",", ":"))
