"""Book events, WALs of them, and the rows they must give, read off the events themselves
(never by the parser under test)."""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from tests.loader.helpers import BASE_MS, BASE_NS, MARKET, real_frames, trade_event, write_segment
from wal import SegmentReader
from wal.records import frame

TABLES = ("book_snapshots", "price_changes", "best_bid_ask", "tick_size_changes")
COLUMNS = {
    "book_snapshots": "ts, token_id, market, bids_price, bids_size, asks_price, asks_size, hash,"
    " received_at",
    "price_changes": "ts, token_id, market, side, price, size, best_bid, best_ask, hash,"
    " received_at",
    "best_bid_ask": "ts, token_id, market, best_bid, best_ask, spread, received_at",
    "tick_size_changes": "ts, token_id, market, old_tick_size, new_tick_size, received_at",
}
Rows = dict[str, Counter[tuple[Any, ...]]]


def hashable(row: tuple[Any, ...] | list[Any]) -> tuple[Any, ...]:
    """A row with its arrays as tuples, so rows can be counted."""
    return tuple(tuple(v) if isinstance(v, list) else v for v in row)


def _ts(ms: str) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000, UTC)


def _received(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // 1000 / 1_000_000, UTC)


def _f(value: str | None) -> float | None:
    return None if value in (None, "") else float(value)


def expected_rows(event: dict[str, Any], ns: int) -> dict[str, list[tuple[Any, ...]]]:
    """The rows a valid event must give, by table."""
    out: dict[str, list[tuple[Any, ...]]] = {table: [] for table in TABLES}
    kind, rec = event.get("event_type"), _received(ns)
    if kind == "book":
        bids = sorted(((float(x["price"]), float(x["size"])) for x in event["bids"]), reverse=True)
        asks = sorted((float(x["price"]), float(x["size"])) for x in event["asks"])
        out["book_snapshots"].append(
            (
                *(_ts(event["timestamp"]), event["asset_id"], event["market"]),
                *([p for p, _ in bids], [s for _, s in bids]),
                *([p for p, _ in asks], [s for _, s in asks]),
                *(event.get("hash"), rec),
            )
        )
    elif kind == "price_change":
        if "price_changes" in event:
            entries = [
                (c, _f(c.get("best_bid")), _f(c.get("best_ask"))) for c in event["price_changes"]
            ]
        elif "changes" in event:
            entries = [
                ({**c, "asset_id": event["asset_id"], "hash": event["hash"]}, None, None)
                for c in event["changes"]
            ]
        else:
            entries = [(event, None, None)]
        for c, bid, ask in entries:
            out["price_changes"].append(
                (
                    *(_ts(event["timestamp"]), c["asset_id"], event["market"], c["side"]),
                    *(float(c["price"]), float(c["size"]), bid, ask, c.get("hash"), rec),
                )
            )
    elif kind == "best_bid_ask":
        out["best_bid_ask"].append(
            (
                *(_ts(event["timestamp"]), event["asset_id"], event["market"]),
                *(_f(event["best_bid"]), _f(event["best_ask"]), _f(event["spread"]), rec),
            )
        )
    elif kind == "tick_size_change":
        out["tick_size_changes"].append(
            (
                *(_ts(event["timestamp"]), event["asset_id"], event["market"]),
                *(_f(event["old_tick_size"]), float(event["new_tick_size"]), rec),
            )
        )
    return out


def events_of(text: str) -> list[dict[str, Any]]:
    try:
        value = json.loads(text)
    except ValueError:
        return []
    if isinstance(value, dict):
        return [value]
    return [e for e in value if isinstance(e, dict)] if isinstance(value, list) else []


def expected_book_rows(paths: list[Path]) -> Rows:
    """Every table's rows for the valid book events in the frames of ``paths``."""
    rows: Rows = {table: Counter() for table in TABLES}
    for path in paths:
        for _offset, rec in SegmentReader(path).records():
            if rec["type"] != "frame":
                continue
            for event in events_of(rec["text"]):
                if event == BAD_BOOK_EVENT:
                    continue
                for table, found in expected_rows(event, rec["ts_ns"]).items():
                    rows[table].update(map(hashable, found))
    return rows


def db_book_rows(dsn: str) -> Rows:
    """Every book view as a multiset of rows (contract columns, without segment_id)."""
    with psycopg.connect(dsn) as conn:
        return {
            table: Counter(
                hashable(row) for row in conn.execute(f"SELECT {COLUMNS[table]} FROM {table}")
            )
            for table in TABLES
        }


def _token(i: int) -> str:
    return f"{10**76 + i % 5}"


def book_event(rng: random.Random, i: int) -> dict[str, Any]:
    """A valid book event of some kind; ``i`` makes it distinct."""
    ms, token = str(BASE_MS + i), _token(i)
    roll = rng.random()
    if roll < 0.05:
        return {
            "event_type": "book", "asset_id": token, "market": MARKET, "timestamp": ms,
            "hash": f"{i:040x}",
            "bids": [{"price": f"0.{p}", "size": str(i % 97 + p)} for p in (41, 45, 43)],
            "asks": [{"price": f"0.{p}", "size": f"{p}.5"} for p in (58, 52, 55)],
        }  # fmt: skip
    if roll < 0.08:
        return {
            "event_type": "best_bid_ask", "asset_id": token, "market": MARKET,
            "best_bid": "0.45", "best_ask": "0.52", "spread": "0.07", "timestamp": ms,
        }  # fmt: skip
    if roll < 0.09:
        return {
            "event_type": "tick_size_change", "asset_id": token, "market": MARKET,
            "old_tick_size": "0.01", "new_tick_size": "0.001", "timestamp": ms,
        }  # fmt: skip
    if roll < 0.15:
        return {
            "event_type": "price_change", "asset_id": token, "market": MARKET, "timestamp": ms,
            "hash": f"{i:040x}", "changes": [{"price": "0.44", "side": "BUY", "size": str(i % 9)}],
        }  # fmt: skip
    return {
        "event_type": "price_change", "market": MARKET, "timestamp": ms,
        "price_changes": [
            {"asset_id": _token(i + k), "price": f"0.{40 + (i + k) % 20}", "size": str(i % 11),
             "side": "BUY" if (i + k) % 2 else "SELL", "hash": f"{i * 7 + k:040x}",
             "best_bid": "0.45", "best_ask": "0.52"}
            for k in range(rng.randint(1, 3))
        ],
    }  # fmt: skip


BAD_BOOK_EVENT = {"event_type": "book", "asset_id": "1", "market": MARKET, "timestamp": "soon"}


def build_book_wal(
    wal_dir: Path, segments: int, frames_per_batch: int, batches: int = 3, seed: int = 1
) -> int:
    """Segments of book-heavy frames (arrays and single events, a trade in each batch, one
    invalid book event per batch, every real frame in the first). Returns invalid events."""
    rng, i, bad = random.Random(seed), 0, 0
    for seq in range(segments):
        out = []
        for b in range(batches):
            records = []
            if seq == 0 and b == 0:
                texts = [item["frame"] for item in real_frames()]
                records += [frame(BASE_NS + k, 1, k, t) for k, t in enumerate(texts)]
            for _ in range(frames_per_batch):
                i += 1
                text = json.dumps(book_event(rng, i) if i % 4 else [book_event(rng, i + 10**6)])
                records.append(frame(BASE_NS + i * 1000, 0, i, text))
            records.append(frame(BASE_NS + i * 1000 + 1, 0, i, json.dumps(trade_event(i))))
            records.append(frame(BASE_NS + i * 1000 + 2, 0, i, json.dumps(BAD_BOOK_EVENT)))
            bad += 1
            out.append(records)
        write_segment(wal_dir, seq, out)
    return bad
