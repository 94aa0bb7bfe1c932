"""End-to-end latency: from a trade frame's receive time to its row being committed.

Fake exchange -> ``capture run --rotate-seconds 1`` -> WAL -> ``loader run`` (polling)
-> PostgreSQL, all real processes, at a steady feed rate for ``RUN_S`` seconds. A poller
queries new rows every ``POLL_S`` and notes when each first becomes visible.

Baseline, in the same run: the wait the WAL design itself imposes, from receipt to the
``seal`` of the trade's segment (nothing can load a segment before it is sealed). The
ratio is total p99 / seal-wait p99; the rest is the loader's polling and loading.
Goal: p99 under 3 s. Run as ``python -m bench.e2e`` (or ``make bench``).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from bench.results import write_section
from scripts import pgserver
from scripts.pipeline import run_cli, start_capture, start_exchange, start_loader
from wal.reader import SegmentReader

RUN_S = float(os.environ.get("BENCH_E2E_SECONDS", "30"))
POLL_S = 0.05  # visibility poll; adds at most this much to each measurement
RATE = 100.0  # frames/s per connection
ASSETS = 400  # two connections of 200


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _poll(dsn: str, deadline: float) -> dict[int, list[tuple[datetime, float]]]:
    """segment_id -> [(received_at, seen_at_epoch_s)] for rows as they become visible."""
    seen: dict[int, list[tuple[datetime, float]]] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            done = list(seen) or [-1]
            rows = conn.execute(
                "SELECT segment_id, received_at FROM trades WHERE segment_id <> ALL(%s)", (done,)
            ).fetchall()
            now = time.time()
            for segment_id, received_at in rows:
                seen.setdefault(segment_id, []).append((received_at, now))
            time.sleep(POLL_S)
    return seen


def _seal_times(dsn: str, wal_dir: Path) -> dict[int, float]:
    with psycopg.connect(dsn) as conn:
        names = dict(conn.execute("SELECT id, name FROM wal_segments").fetchall())
    out = {}
    for segment_id, name in names.items():
        last = list(SegmentReader(wal_dir / name).records())[-1][1]
        out[segment_id] = last["ts_ns"] / 1e9
    return out


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # the server may run as the postgres user
        dsn = pgserver.start(work / "pg")
        exchange = start_exchange(work, assets=ASSETS, rate=RATE, seed=3, trade_fraction=0.2)
        run_cli("loader", "--dsn", dsn, "init-db")
        capture = start_capture(work, work / "wal", exchange, "--rotate-seconds", "1")
        loader = start_loader(work, work / "wal", dsn, "--poll-seconds", "0.1")
        try:
            seen = _poll(dsn, time.monotonic() + RUN_S)
            seals = _seal_times(dsn, work / "wal")
        finally:
            capture.stop()
            loader.stop()
            exchange.stop()
            pgserver.destroy(work / "pg")
    total, seal_wait = [], []
    for segment_id, rows in seen.items():
        for received_at, seen_at in rows:
            received = received_at.astimezone(UTC).timestamp()
            total.append(seen_at - received)
            seal_wait.append(seals[segment_id] - received)
    p99_total, p99_seal = _percentile(total, 0.99), _percentile(seal_wait, 0.99)
    write_section(
        "e2e",
        {
            "trades": len(total),
            "seconds": RUN_S,
            "feed_frames_per_s": RATE * 2,
            "rotate_s": 1,
            "latency_s": {
                "p50": round(statistics.median(total), 3),
                "p99": round(p99_total, 3),
                "max": round(max(total), 3),
            },
            "baseline": {
                "what": "receipt -> seal of the trade's segment (the floor the WAL imposes)",
                "p50": round(statistics.median(seal_wait), 3),
                "p99": round(p99_seal, 3),
            },
            "ratio": round(p99_total / p99_seal, 3),
            "ratio_means": "total p99 / seal-wait p99",
            "goal_p99_s": 3.0,
        },
    )


if __name__ == "__main__":
    main()
