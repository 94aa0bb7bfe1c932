"""Building WAL segments and trade frames for the loader tests.

Segments are written in the format directly (header, frames in zstd frames, seal), so a
test controls exactly where each zstd frame starts and how many there are.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wal.naming import make_name
from wal.records import Record, conn_open, encode_record, frame, seal, segment_header, sent
from wal.segment import compressor

BASE_NS = 1_786_728_467_000_000_000  # 2026-08-14: where the real frames' clocks are
BASE_MS = BASE_NS // 1_000_000
ASSET = "72710166409980712002774407052535905861151156175854323762835102340552522606004"
MARKET = "0x12dc2b61723b2a54fc1947a307389b5f32038e7a29a0e936ad1fe410b969d06a"
# A copy of the live-feed frames (provenance and licenses per line and in
# realframes.README.md), kept in the repo so the tests run from a clone.
REAL_FRAMES = Path(__file__).resolve().parents[1] / "data" / "realframes.jsonl"


def trade_event(i: int = 0, **overrides: Any) -> dict[str, Any]:
    """A valid last_trade_price event; ``i`` makes it distinct."""
    event: dict[str, Any] = {
        "asset_id": f"{ASSET[:-4]}{i % 7:04d}",
        "event_type": "last_trade_price",
        "fee_rate_bps": "0",
        "market": MARKET,
        "price": f"0.{(i * 37) % 1000:03d}",
        "side": "BUY" if i % 2 else "SELL",
        "size": f"{i % 500}.{i % 100:02d}",
        "timestamp": str(BASE_MS + i),
        "transaction_hash": f"0x{i:064x}",
    }
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not _DROP}


_DROP = object()
DROP: Any = _DROP  # pass as an override value to leave the field out


def trade_frame(i: int, conn: int = 0, **overrides: Any) -> Record:
    """A frame record holding one trade event."""
    return frame(BASE_NS + i * 1000, conn, i, json.dumps(trade_event(i, **overrides)))


def text_frame(i: int, text: str) -> Record:
    return frame(BASE_NS + i * 1000, 0, i, text)


def write_segment(
    directory: Path, seq: int, batches: Sequence[Sequence[Record]], *, recovered: bool = False
) -> Path:
    """A sealed segment whose zstd frames hold ``batches`` (header and seal added).
    ``recovered``: sealed by crash recovery (the seal alone in a last zstd frame)."""
    created_ns = BASE_NS + seq * 1_000_000_000
    name = make_name(seq, created_ns)
    chunks: list[list[Record]] = [list(b) for b in batches] or [[]]
    chunks[0].insert(0, segment_header(seq, created_ns, "tests", host="test"))
    records = sum(len(c) for c in chunks) + 1
    frames = sum(1 for c in chunks for r in c if r["type"] == "frame")
    if recovered:
        chunks.append([seal(created_ns + 1, records, frames, recovered=True, truncated_bytes=0)])
    else:
        chunks[-1].append(seal(created_ns + 1, records, frames))
    cctx = compressor(3)
    data = b"".join(cctx.compress(b"".join(map(encode_record, c))) for c in chunks)
    path = directory / name.sealed_name
    path.write_bytes(data)
    return path


def frame_offsets(path: Path) -> list[int]:
    """Byte offsets of the zstd frames of ``path``."""
    from wal import SegmentReader

    return [batch.offset for batch in SegmentReader(path).batches()]


def real_frames() -> list[dict[str, Any]]:
    """The live-feed frames of tests/data/realframes.jsonl, with their provenance."""
    return [json.loads(line) for line in REAL_FRAMES.read_text().splitlines() if line.strip()]


# A WAL for crash and outage tests: many small frames, some invalid and duplicate trades.
CRASH_SEGMENTS = 14
CRASH_FRAMES_PER_SEGMENT = 40
CRASH_TRADES_PER_FRAME = 20
CRASH_WAL_FRAMES = CRASH_SEGMENTS * CRASH_FRAMES_PER_SEGMENT
CRASH_WAL_TRADES = CRASH_WAL_FRAMES * CRASH_TRADES_PER_FRAME


TradeKey = tuple[str, str, str, float, float, int]


def trade_key(event: dict[str, Any]) -> TradeKey:
    """What identifies a valid trade event, read off the event itself (not by the parser):
    (transaction_hash, token_id, side, price, size, timestamp in ms); ``DB_TRADE_KEYS``
    selects the same from the table."""
    return (
        event["transaction_hash"],
        event["asset_id"],
        event["side"],
        float(event["price"]),
        float(event["size"]),
        int(event["timestamp"]),
    )


DB_TRADE_KEYS = (
    "SELECT transaction_hash, token_id, side, price, size,"
    " (extract(epoch FROM ts) * 1000)::bigint FROM trades"
)


def build_wal(wal_dir: Path) -> Counter[TradeKey]:
    """CRASH_SEGMENTS segments; each frame: 19 trades + 1 invalid, then one duplicate.

    Returns the keys of the valid trades written (a multiset: the duplicate counts twice),
    CRASH_WAL_TRADES in all, so tests can check the loader without trusting its parser.
    """
    i = 0
    written: Counter[TradeKey] = Counter()
    for seq in range(CRASH_SEGMENTS):
        batches = []
        for _ in range(CRASH_FRAMES_PER_SEGMENT):
            valid = [trade_event(i + k) for k in range(CRASH_TRADES_PER_FRAME - 1)]
            events = [*valid, trade_event(i, price="7")]  # invalid: counted, never loaded
            duplicate = trade_event(i)  # the same trade again: kept twice, no dedup
            batches.append(
                [
                    frame(trade_frame(i)["ts_ns"], 0, i, json.dumps(events)),
                    frame(trade_frame(i)["ts_ns"], 0, i, json.dumps(duplicate)),
                    text_frame(i, "PONG"),
                ]
            )
            written.update(trade_key(event) for event in [*valid, duplicate])
            i += CRASH_TRADES_PER_FRAME
        write_segment(wal_dir, seq, batches)
    assert sum(written.values()) == CRASH_WAL_TRADES
    return written


def opened(ts_ns: int, conn: int, shard: int | None = None, replica: int | None = None) -> Record:
    """A ``conn_open``; with ``shard``/``replica`` as capture writes them with redundancy."""
    record = conn_open(ts_ns, conn, URL)
    if shard is not None:
        record |= {"shard": shard, "replica": replica or 0}
    return record


def subscribed(ts_ns: int, conn: int, assets: Sequence[str]) -> Record:
    """The initial subscribe ``sent`` record of a connection."""
    text = json.dumps({"assets_ids": list(assets), "type": "market", "initial_dump": True})
    return sent(ts_ns, conn, text)


URL = "ws://127.0.0.1:1/ws/market"
