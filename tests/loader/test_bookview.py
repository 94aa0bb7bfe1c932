"""The book at a moment: ``book_at`` (SQL) and ``loader book``, on a replayed sequence whose
book is known at each step, including a snapshot that resets it after a reconnect."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from loader.bookview import NoBookError, book_at, parse_time
from loader.runner import Runner
from tests.loader.conftest import run_loader
from tests.loader.helpers import BASE_MS, BASE_NS, MARKET, write_segment
from wal.records import frame

TOKEN = "1234567890123456789012345678901234567890123456789012345678901234567890123456"
OTHER = "9" * 76


def _book(ms: int, bids: dict[str, str], asks: dict[str, str], token: str = TOKEN) -> Any:
    return {
        "event_type": "book", "asset_id": token, "market": MARKET, "timestamp": str(ms),
        "hash": "ab" * 20,
        "bids": [{"price": p, "size": s} for p, s in bids.items()],
        "asks": [{"price": p, "size": s} for p, s in asks.items()],
    }  # fmt: skip


def _change(ms: int, side: str, price: str, size: str, token: str = TOKEN) -> Any:
    return {
        "event_type": "price_change", "market": MARKET, "timestamp": str(ms),
        "price_changes": [{"asset_id": token, "price": price, "size": size, "side": side,
                           "hash": "cd" * 20, "best_bid": "", "best_ask": ""}],
    }  # fmt: skip


def _old_change(ms: int, side: str, price: str, size: str) -> Any:
    return {
        "event_type": "price_change", "asset_id": TOKEN, "market": MARKET, "hash": "ef",
        "timestamp": str(ms), "changes": [{"price": price, "side": side, "size": size}],
    }  # fmt: skip


STEPS: list[Any] = [
    _book(BASE_MS + 0, {"0.40": "10", "0.45": "5"}, {"0.60": "3", "0.55": "7"}),
    _change(BASE_MS + 10, "BUY", "0.46", "4"),  # a new best bid
    _change(BASE_MS + 10, "BUY", "0.10", "1", token=OTHER),  # another token: ignored
    _change(BASE_MS + 20, "SELL", "0.55", "0"),  # the best ask removed
    _change(BASE_MS + 30, "BUY", "0.40", "12"),  # a level's new total
    _old_change(BASE_MS + 40, "SELL", "0.58", "2"),  # the older format
    _book(BASE_MS + 50, {"0.30": "1"}, {"0.70": "1"}),  # reconnect: the state resets
    _change(BASE_MS + 60, "BUY", "0.31", "2"),
    _change(BASE_MS + 70, "BUY", "0.31", "0"),
    _change(BASE_MS + 80, "BUY", "0.30", "0"),  # bids empty
]


def replay(upto_ms: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]], int]:
    """The book of TOKEN after every step at or before ``upto_ms``: a plain model."""
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    applied = 0
    for step in STEPS:
        if int(step["timestamp"]) > upto_ms:
            break
        if step["event_type"] == "book":
            bids = {float(x["price"]): float(x["size"]) for x in step["bids"]}
            asks = {float(x["price"]): float(x["size"]) for x in step["asks"]}
            applied = 0
            continue
        entries = step.get("price_changes") or [{**c, "asset_id": TOKEN} for c in step["changes"]]
        for entry in entries:
            if entry["asset_id"] != TOKEN:
                continue
            levels = bids if entry["side"] == "BUY" else asks
            levels[float(entry["price"])] = float(entry["size"])
            if float(entry["size"]) == 0:
                del levels[float(entry["price"])]
            applied += 1
    return sorted(bids.items(), reverse=True), sorted(asks.items()), applied


@pytest.fixture
def loaded(db: str, wal_dir: Path) -> str:
    records = [frame(BASE_NS + i * 1000, 0, i, json.dumps(step)) for i, step in enumerate(STEPS)]
    write_segment(wal_dir, 0, [records[:5], records[5:]])
    runner = Runner(db, wal_dir, stop=threading.Event(), books=True)
    try:
        runner.run(once=True)
    finally:
        runner.close()
    return db


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def test_book_at_each_step_equals_the_replayed_book(loaded: str) -> None:
    with psycopg.connect(loaded) as conn:
        for ms in sorted({int(s["timestamp"]) for s in STEPS} | {BASE_MS + 15, BASE_MS + 999}):
            book = book_at(conn, TOKEN, _at(ms))
            bids, asks, applied = replay(ms)
            assert (book.bids, book.asks, book.changes_applied) == (bids, asks, applied), ms
            assert book.best_bid == (bids[0][0] if bids else None)
            assert book.best_ask == (asks[0][0] if asks else None)
            start = BASE_MS if ms < BASE_MS + 50 else BASE_MS + 50
            assert book.snapshot_ts == _at(start)


def test_book_before_any_snapshot_is_an_error(loaded: str) -> None:
    with psycopg.connect(loaded) as conn, pytest.raises(NoBookError, match="no book snapshot"):
        book_at(conn, TOKEN, _at(BASE_MS) - timedelta(milliseconds=1))


def test_loader_book_prints_json_and_text_with_depth(loaded: str) -> None:
    at = _at(BASE_MS + 40).isoformat()
    out = run_loader(loaded, "book", TOKEN, "--at", at, "--json", "--depth", "1")
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["bids"] == [[0.46, 4.0]] and body["asks"] == [[0.58, 2.0]]
    assert (body["best_bid"], body["best_ask"], body["changes_applied"]) == (0.46, 0.58, 4)
    text = run_loader(loaded, "book", TOKEN, "--at", str(BASE_MS + 40))
    assert text.returncode == 0 and "4 changes applied" in text.stdout
    assert "best bid/ask 0.46 / 0.58" in text.stdout
    missing = run_loader(loaded, "book", OTHER, "--at", at)
    assert missing.returncode == 1 and "no book snapshot" in missing.stderr
    assert "Traceback" not in missing.stderr
    bad = run_loader(loaded, "book", TOKEN, "--at", "yesterday")
    assert bad.returncode == 2


def test_times_are_iso_or_epoch_milliseconds() -> None:
    assert parse_time("2026-08-14T17:27:47Z") == datetime(2026, 8, 14, 17, 27, 47, tzinfo=UTC)
    assert parse_time("2026-08-14 17:27:47") == datetime(2026, 8, 14, 17, 27, 47, tzinfo=UTC)
    assert parse_time(str(BASE_MS)) == _at(BASE_MS)
    with pytest.raises(ValueError):
        parse_time("soon")
    with pytest.raises(ValueError, match="epoch seconds"):
        parse_time(str(BASE_MS // 1000))
