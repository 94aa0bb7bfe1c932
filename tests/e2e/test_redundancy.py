"""``--redundancy 2`` end to end, all real processes: the fake exchange (sending the same
events to both replicas of a shard, as the real one does) drops one replica at a time,
never both, five times; the loader, SIGKILLed and restarted meanwhile, keeps every trade
the exchange sent exactly once and records no gap. Then both replicas drop at once: one
gap, for the shard's assets, covering the drop.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg

from loader.parse import parse_frame
from scripts.pipeline import (
    Exchange,
    run_cli,
    start_capture,
    start_exchange,
    start_loader,
    trade_key,
    wait_for,
)
from tests.e2e.test_chaos import _all_loaded
from tests.timeouts import scaled

ASSETS = 10  # one shard: two connections, the two replicas
CAPTURE_OPTS = (
    "--redundancy",
    "2",
    "--replica-stagger",
    "0.3",
    "--rotate-seconds",
    "1",
    "--flush-ms",
    "50",
    "--silence-timeout",
    "30",  # no silence here: only the drops
    "--ping-interval",
    "1",
    "--pong-timeout",
    "5",
    "--backoff-initial",
    "0.2",
    "--backoff-max",
    "0.5",
    "--status-interval",
    "1",
)


def _open(exchange: Exchange) -> list[int]:
    return list(exchange.control("stats")["open"])


def _sent_once(record: Path) -> Counter[Any]:
    """Each trade the exchange sent, once however many replicas it went to; and a check
    that no connection got one twice (so "once" is the exact expectation)."""
    texts: dict[int, list[str]] = {}
    for line in record.read_text().splitlines():
        entry = json.loads(line) if line.endswith("}") else None
        if entry and "last_trade_price" in entry.get("text", ""):
            texts.setdefault(entry["conn"], []).append(entry["text"])
    for conn, sent in texts.items():
        assert len(sent) == len(set(sent)), f"connection {conn} got a frame twice"
    trades: Counter[Any] = Counter()
    for text in {t for sent in texts.values() for t in sent}:
        rows, _ = parse_frame({"type": "frame", "ts_ns": time.time_ns(), "text": text})
        trades.update(trade_key(r) for r in rows)
    return trades


def test_redundant_replicas_keep_every_trade_once_and_only_a_double_drop_is_a_gap(
    tmp_path: Path, fresh_db: str
) -> None:
    rng = random.Random(3)
    wal_dir = tmp_path / "wal"
    exchange = start_exchange(
        tmp_path, assets=ASSETS, rate=40, seed=4, trade_fraction=0.4, shared_stream=True
    )
    run_cli("loader", "--dsn", fresh_db, "init-db")
    capture = start_capture(tmp_path, wal_dir, exchange, *CAPTURE_OPTS)
    loader = start_loader(tmp_path, wal_dir, fresh_db, "--poll-seconds", "0.2")
    try:
        for drop in range(5):  # one replica at a time; the sibling carries the assets
            wait_for(lambda: len(_open(exchange)) == 2, scaled(20), "both replicas up")
            time.sleep(rng.uniform(0.5, 1.5))
            assert exchange.control("drop_conn", conn=rng.choice(_open(exchange)))["dropped"]
            if drop % 2:
                loader.kill()
                loader = start_loader(tmp_path, wal_dir, fresh_db, "--poll-seconds", "0.2")
        wait_for(lambda: len(_open(exchange)) == 2, scaled(20), "both replicas up")
        time.sleep(1.0)
        dropped_at = time.time()
        exchange.control("drop_all")  # both at once: a gap until the first resubscribe
        wait_for(lambda: len(_open(exchange)) == 2, scaled(20), "both replicas back")
        time.sleep(1.0)
        assert capture.stop() == 0, capture.tail()
        wait_for(lambda: _all_loaded(fresh_db, wal_dir), scaled(60), "the loader to catch up")
        assert loader.stop() == 0, loader.tail()
    finally:
        capture.kill()
        loader.kill()
        exchange.stop()

    expected = _sent_once(exchange.record)
    with psycopg.connect(fresh_db) as conn:
        loaded = Counter(
            tuple(row)
            for row in conn.execute(
                "SELECT ts, token_id, side, price, size, market, fee_rate_bps, transaction_hash"
                " FROM trades"
            )
        )
    assert sum(expected.values()) > 100, "too few trades to mean much"
    assert loaded == expected, (list((loaded - expected).items())[:3], (expected - loaded))

    gaps = json.loads(run_cli("loader", "--dsn", fresh_db, "gaps", "--json").stdout)
    assert len(gaps) == 1, gaps
    assert len(gaps[0]["token_ids"]) == ASSETS
    started = gaps[0]["started_at"]
    assert abs(_epoch(started) - dropped_at) < scaled(2), (started, dropped_at)


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()
