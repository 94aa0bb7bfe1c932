"""Market metadata: capture's ``meta`` records of Gamma objects (new or changed only) and
the feed's new_market/market_resolved events become ``markets`` and ``tokens``, the
latest observation winning whatever the load order; reparse leaves identical rows."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import psycopg

from capture.discovery import MarketLog, discover
from loader.runner import Runner
from tests.fakes.exchange import FakeExchange
from tests.loader.helpers import BASE_MS, BASE_NS, real_frames, write_segment
from wal.records import Record, frame


def _tables(dsn: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    with psycopg.connect(dsn) as conn:
        markets = conn.execute("SELECT * FROM markets ORDER BY condition_id").fetchall()
        tokens = conn.execute("SELECT * FROM tokens ORDER BY token_id").fetchall()
    return markets, tokens


def _run(dsn: str, wal_dir: Path) -> None:
    runner = Runner(dsn, wal_dir, stop=threading.Event())
    try:
        runner.run(once=True)
    finally:
        runner.close()


def _reparse(dsn: str, wal_dir: Path, names: list[str]) -> None:
    runner = Runner(dsn, wal_dir, stop=threading.Event())
    try:
        runner.reparse(names, lambda _o: None)
    finally:
        runner.close()


async def test_gamma_objects_are_recorded_when_new_or_changed_only() -> None:
    clock = iter(range(BASE_NS, BASE_NS + 10**9, 10**6))
    recorded: list[Record] = []
    log = MarketLog(recorded.append, clock_ns=lambda: next(clock))
    async with FakeExchange(assets=6) as ex:
        await discover(ex.gamma_url, log.observe)
        assert len(recorded) == 3 and {r["type"] for r in recorded} == {"meta"}
        assert recorded[0]["source"].startswith(ex.gamma_url + "/markets")
        await discover(ex.gamma_url, log.observe)
        assert len(recorded) == 3  # nothing changed: nothing recorded
        ex.universe.markets[1].revise()
        await discover(ex.gamma_url, log.observe)
        assert len(recorded) == 4
        assert json.loads(recorded[-1]["text"]) == ex.universe.markets[1].gamma()


async def test_markets_table_follows_gamma_objects_that_change(db: str, wal_dir: Path) -> None:
    clock = iter(range(BASE_NS, BASE_NS + 10**12, 10**9))
    recorded: list[Record] = []
    log = MarketLog(recorded.append, clock_ns=lambda: next(clock))
    async with FakeExchange(assets=4) as ex:
        await discover(ex.gamma_url, log.observe)
        first = list(recorded)
        market = ex.universe.markets[0]
        market.revise()
        market.revise()
        await discover(ex.gamma_url, log.observe)
        later = recorded[len(first) :]
        want = market.gamma()
    assert len(later) == 1
    resolved = {
        "event_type": "market_resolved", "market": market.condition_id,
        "winning_asset_id": market.tokens[1], "winning_outcome": "No",
        "timestamp": str(BASE_MS + 5000), "assets_ids": market.tokens, "event_message": None,
    }  # fmt: skip
    # The resolution arrives (by receive time) between the two Gamma observations.
    resolution = frame(BASE_NS + int(1.5e9), 0, 0, json.dumps(resolved))
    write_segment(wal_dir, 0, [first])
    write_segment(wal_dir, 1, [[resolution], later])
    await asyncio.to_thread(_run, db, wal_dir)
    markets, tokens = await asyncio.to_thread(_tables, db)
    row = {m[0]: m for m in markets}[market.condition_id]
    assert row[1] == want["question"] and row[1].endswith("(revision 2)")
    assert (row[2], row[3], row[4], row[5]) == (
        market.slug, f"{market.slug}-event", ["Yes", "No"], market.tokens,
    )  # fmt: skip
    assert (row[6], row[7]) == (True, False)  # the latest observation (Gamma, later) wins
    assert row[8].isoformat() == "2026-12-03T12:00:00+00:00"
    assert row[10] == market.tokens[1] and row[9] is not None
    assert len(markets) == 2 and len(tokens) == 4
    assert (market.tokens[0], market.condition_id, "Yes", 0) in tokens
    # Reparse the older segment after the newer: the latest observation still wins.
    names = sorted(p.name for p in wal_dir.iterdir())
    await asyncio.to_thread(_reparse, db, wal_dir, names[:1])
    assert await asyncio.to_thread(_tables, db) == (markets, tokens)
    await asyncio.to_thread(_reparse, db, wal_dir, names)
    assert await asyncio.to_thread(_tables, db) == (markets, tokens)


def test_new_market_frames_add_markets_and_tokens(db: str, wal_dir: Path) -> None:
    text = next(f["frame"] for f in real_frames() if '"new_market"' in f["frame"])
    write_segment(wal_dir, 0, [[frame(BASE_NS, 0, 0, text)]])
    _run(db, wal_dir)
    markets, tokens = _tables(db)
    event = json.loads(text)
    assert [m[0] for m in markets] == [event["market"]]
    assert markets[0][1] == event["question"] and markets[0][3] == event["event_message"]["slug"]
    assert markets[0][6] is False and markets[0][7] is None
    assert sorted((t[0], t[2], t[3]) for t in tokens) == sorted(
        (tok, event["outcomes"][i], i) for i, tok in enumerate(event["assets_ids"])
    )
