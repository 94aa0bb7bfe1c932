"""Loader benchmark: (a) trades/s from segments to committed rows, against a binary COPY
of the same rows prebuilt in memory; (b) frames/s scanned on a realistic mix.

Starts its own throwaway PostgreSQL (scripts/pgserver.py). Writes the ``loader``
section of bench/results.json. ``--trades`` and ``--mix-frames`` scale it down.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import write_section  # noqa: E402
from loader.load import CURRENT_PARSER, DEFAULT_BATCH_TRADES, read_batches  # noqa: E402
from loader.runner import Runner  # noqa: E402
from loader.schema import init_db  # noqa: E402
from loader.store import COPY_SQL, COPY_TYPES  # noqa: E402
from scripts import pgserver  # noqa: E402
from wal.naming import make_name  # noqa: E402
from wal.records import encode_record, frame, seal, segment_header  # noqa: E402
from wal.segment import compressor  # noqa: E402

TRADES = 1_000_000
MIX_FRAMES = 600_000
TRADE_SHARE = 0.05  # the "realistic mix": about 5% trades
FRAMES_PER_SEGMENT = 200_000  # ~ a 5-minute segment at a busy hour
BATCH_BYTES = 1 << 20  # the writer's default zstd frame size
BASE_NS = 1_786_728_467_000_000_000
GOAL_RATIO = 0.6
GOAL_SCAN = 300_000


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


def write_wal(directory: Path, texts: list[str]) -> int:
    """Segments of FRAMES_PER_SEGMENT frames in ~1 MiB zstd frames; returns bytes written."""
    cctx = compressor(3)
    total = 0
    for seq, start in enumerate(range(0, len(texts), FRAMES_PER_SEGMENT)):
        chunk = texts[start : start + FRAMES_PER_SEGMENT]
        created = BASE_NS + seq * 300 * 10**9
        lines = [encode_record(segment_header(seq, created, "bench", host="bench"))]
        lines += [encode_record(frame(created + i, 0, i, t)) for i, t in enumerate(chunk)]
        lines.append(encode_record(seal(created + len(chunk), len(lines) + 1, len(chunk))))
        out, batch, size = [], [], 0
        for line in lines:
            batch.append(line)
            size += len(line)
            if size >= BATCH_BYTES:
                out.append(cctx.compress(b"".join(batch)))
                batch, size = [], 0
        if batch:
            out.append(cctx.compress(b"".join(batch)))
        data = b"".join(out)
        (directory / make_name(seq, created).sealed_name).write_bytes(data)
        total += len(data)
    return total


def reset(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("TRUNCATE trades, wal_segments")


def loader_rate(dsn: str, wal_dir: Path, batch_trades: int) -> tuple[float, int, float]:
    """(trades/s, trades, seconds) of an in-process ``loader run --once`` from scratch."""
    reset(dsn)
    runner = Runner(dsn, wal_dir, stop=threading.Event(), batch_trades=batch_trades)
    start = time.perf_counter()
    report = runner.run(once=True)
    elapsed = time.perf_counter() - start
    runner.close()
    return report.trades / elapsed, report.trades, elapsed


def baseline_rate(dsn: str, wal_dir: Path, batch_trades: int) -> float:
    """Binary COPY of the same rows, parsed beforehand, in the same transaction sizes."""
    reset(dsn)
    rows: list[tuple[Any, ...]] = []
    with psycopg.connect(dsn) as conn:
        for path in sorted(wal_dir.iterdir()):
            seg_id = conn.execute(
                "INSERT INTO wal_segments (name, parser_version) VALUES (%s, 1) RETURNING id",
                (path.name,),
            ).fetchone()[0]  # type: ignore[index]
            for _end, result in read_batches(path, 0, CURRENT_PARSER):
                rows.extend((*row, seg_id) for row in result.rows)
        conn.commit()
        start = time.perf_counter()
        for i in range(0, len(rows), batch_trades):
            with conn.transaction(), conn.cursor() as cur, cur.copy(COPY_SQL) as copy:
                copy.set_types(COPY_TYPES)
                for row in rows[i : i + batch_trades]:
                    copy.write_row(row)
        elapsed = time.perf_counter() - start
    return len(rows) / elapsed


def scan_rate(wal_dir: Path) -> tuple[float, int]:
    frames = 0
    start = time.perf_counter()
    for path in sorted(wal_dir.iterdir()):
        for _end, result in read_batches(path, 0, CURRENT_PARSER):
            frames += result.frames
    return frames / (time.perf_counter() - start), frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trades", type=int, default=TRADES)
    parser.add_argument("--mix-frames", type=int, default=MIX_FRAMES)
    parser.add_argument("--batch-sizes", default=f"5000,{DEFAULT_BATCH_TRADES},50000")
    args = parser.parse_args()
    rng = random.Random(1)
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        trades_dir, mix_dir = Path(tmp) / "trades", Path(tmp) / "mix"
        trades_dir.mkdir()
        mix_dir.mkdir()
        trades_bytes = write_wal(trades_dir, [trade_text(i, rng) for i in range(args.trades)])
        makers = [price_change_text, book_text]
        mix = [
            trade_text(i, rng) if rng.random() < TRADE_SHARE else rng.choice(makers)(i, rng)
            for i in range(args.mix_frames)
        ]
        mix_bytes = write_wal(mix_dir, mix)
        scan, scanned = scan_rate(mix_dir)
        datadir = Path(tempfile.mkdtemp(prefix="bench-pg-"))
        try:
            dsn = pgserver.start(datadir)
            with psycopg.connect(dsn) as conn:
                init_db(conn)
            by_batch = {}
            for size in (int(s) for s in args.batch_sizes.split(",")):
                rate, _, _ = loader_rate(dsn, trades_dir, size)
                base = baseline_rate(dsn, trades_dir, size)
                by_batch[size] = {
                    "loader_trades_per_s": round(rate),
                    "baseline_copy_rows_per_s": round(base),
                    "ratio": round(rate / base, 3),
                }
                print(f"batch {size}: loader {rate:,.0f}/s baseline {base:,.0f}/s", file=sys.stderr)
            _, mix_trades, mix_s = loader_rate(dsn, mix_dir, DEFAULT_BATCH_TRADES)
        finally:
            pgserver.destroy(datadir)
    chosen = by_batch.get(DEFAULT_BATCH_TRADES) or next(iter(by_batch.values()))
    write_section(
        "loader",
        {
            "trades": args.trades,
            "trades_wal_bytes": trades_bytes,
            "default_batch_trades": DEFAULT_BATCH_TRADES,
            "by_batch_trades": by_batch,
            "loader_trades_per_s": chosen["loader_trades_per_s"],
            "baseline": {
                "what": "binary COPY of the same rows, already built in memory",
                "rows_per_s": chosen["baseline_copy_rows_per_s"],
            },
            "ratio": chosen["ratio"],
            "ratio_means": "loader trades/s / baseline rows/s (goal >= 0.6)",
            "goal_ratio": GOAL_RATIO,
            "mix_frames": scanned,
            "mix_wal_bytes": mix_bytes,
            "mix_trade_share": TRADE_SHARE,
            "mix_scan_frames_per_s": round(scan),
            "mix_load_frames_per_s_into_db": round(scanned / mix_s),
            "mix_load_trades": mix_trades,
            "goal_scan_frames_per_s": GOAL_SCAN,
            "postgres": "throwaway cluster, fsync off, plain table (no TimescaleDB)",
        },
    )


if __name__ == "__main__":
    main()
