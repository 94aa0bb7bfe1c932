"""``make demo``: the whole pipeline on this machine, then a short report.

A throwaway PostgreSQL (data in .demo/pg), the fake exchange with a few hundred assets
and its Gamma endpoint, ``capture run --discover`` with 5 s rotation for about 30 s,
``loader init-db`` and ``loader run`` alongside; then everything stops cleanly and the
report compares what the exchange sent with what was captured and loaded.

    python -m scripts.demo [--seconds 30] [--keep-db]    python -m scripts.demo --stop
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import psycopg

from loader import hypertables
from scripts import pgserver
from scripts.pipeline import (
    ROOT,
    Exchange,
    Proc,
    run_cli,
    sent_trades,
    start_capture,
    start_exchange,
    start_loader,
    summarize_wal,
    wait_for,
)

DEMO = Path(os.environ.get("POLYMARKET_DEMO_DIR", ROOT / ".demo"))  # tests use their own
ASSETS = 300  # a few hundred assets: two connections of 200
RATE = 40.0  # frames/s per connection from the fake exchange
ROTATE_S = 5  # short rotation so the loader has sealed segments to load during the demo

TOP_MARKETS = """
SELECT market, count(*) AS trades, round(sum(size)::numeric, 2) AS traded_size
FROM trades GROUP BY market ORDER BY traded_size DESC LIMIT 5"""


def say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def stop_all() -> None:
    if (DEMO / "pg").exists():
        pgserver.stop(DEMO / "pg")
        say("PostgreSQL stopped")


def run(seconds: float, keep_db: bool) -> int:
    stop_all()
    shutil.rmtree(DEMO, ignore_errors=True)
    DEMO.mkdir()
    wal_dir = DEMO / "wal"
    DEMO.chmod(0o755)  # the server may run as the postgres user
    say(f"starting a throwaway PostgreSQL in {DEMO / 'pg'} ...")
    dsn = pgserver.start(DEMO / "pg")
    exchange = start_exchange(DEMO, assets=ASSETS, rate=RATE, seed=7)
    say(f"fake exchange on {exchange.ws_url} with {exchange.tokens} assets")
    procs: list[Proc] = []
    try:
        init = run_cli("loader", "--dsn", dsn, "init-db")  # says plain tables or TimescaleDB
        say(init.stdout.strip().replace("\n", "\n[demo] "))
        capture = start_capture(DEMO, wal_dir, exchange, "--rotate-seconds", str(ROTATE_S))
        loader = start_loader(DEMO, wal_dir, dsn, "--poll-seconds", "1")
        procs = [capture, loader]
        _watch(seconds, procs, wal_dir)
        exchange.control("stall_data", on=1)  # quiesce, so "sent" and "captured" agree
        time.sleep(1)
        say("stopping capture (SIGTERM: flush, seal) ...")
        if capture.stop() != 0:
            raise RuntimeError(f"capture exited {capture.popen.returncode}:\n{capture.tail()}")
        wait_for(lambda: _caught_up(dsn, wal_dir), 60, "the loader to catch up")
        loader.stop()
    except BaseException:
        for proc in procs:
            print(f"--- {proc.name} log (tail) ---\n{proc.tail()}", file=sys.stderr)
        raise
    finally:
        for proc in procs:
            proc.kill()
        exchange.stop()
    ok = _report(dsn, wal_dir, exchange, keep_db)
    if not keep_db:
        stop_all()
    else:
        say(f"PostgreSQL left running: psql '{dsn}'  (stop it with `make demo-stop`)")
    return 0 if ok else 1


def _watch(seconds: float, procs: list[Proc], wal_dir: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(5)
        for proc in procs:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited early:\n{proc.tail()}")
        status = run_cli("capture", "status", "--wal-dir", str(wal_dir), check=False)
        lines = status.stdout.strip().splitlines() or [status.stderr.strip()]
        left = max(0, int(deadline - time.monotonic()))
        say(f"{left:>3}s left | {lines[0]}")


def _caught_up(dsn: str, wal_dir: Path) -> bool:
    sealed = {p.name for p in wal_dir.glob("*.jsonl.zst")}
    with psycopg.connect(dsn) as conn:
        done = {r[0] for r in conn.execute("SELECT name FROM wal_segments WHERE status = 'loaded'")}
    return sealed <= done


def _report(dsn: str, wal_dir: Path, exchange: Exchange, keep_db: bool) -> bool:
    """Print the report; True when every trade sent was captured and loaded once."""
    wal = summarize_wal(wal_dir)
    sent = sent_trades(exchange.record)
    with psycopg.connect(dsn) as conn:
        loaded = conn.execute("SELECT count(*) FROM trades").fetchone()
        top = conn.execute(TOP_MARKETS).fetchall()
        setup = hypertables.describe(conn).describe()
    loaded_n = loaded[0] if loaded else 0
    print()
    print("polymarket-capture demo report")
    print(f"  frames captured       {wal.frames:>10}   ({wal.records} records)")
    print(f"  segments sealed       {wal.segments:>10}")
    print(
        f"  WAL size              {wal.bytes_on_disk:>10} bytes  "
        f"(compression ratio {wal.compression_ratio:.1f}x)"
    )
    print(f"  trades sent           {sum(sent.values()):>10}   (by the fake exchange)")
    print(f"  trades in the WAL     {sum(wal.trades.values()):>10}")
    print(f"  trades loaded         {loaded_n:>10}   (view trades: {setup})")
    ok = sent == wal.trades and loaded_n == sum(sent.values())
    verdict = "all sent trades loaded exactly once" if ok else f"MISMATCH: see the logs in {DEMO}"
    print(f"  check                 {verdict}")
    print("\n  top markets by traded size:")
    for market, trades, size in top:
        print(f"    {market[:18]}...  {trades:>6} trades  {size:>14} size")
    print(f"\n  logs and data: {DEMO}/  |  .venv/bin/wal ls {wal_dir}")
    if keep_db:
        print(f"  .venv/bin/loader status --dsn '{dsn}' --wal-dir {wal_dir}")
    else:
        print("  (.venv/bin/python -m scripts.demo --keep-db leaves PostgreSQL up for")
        print("  `.venv/bin/loader status`)")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.demo", description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--keep-db", action="store_true", help="leave PostgreSQL running")
    parser.add_argument("--stop", action="store_true", help="stop the demo's PostgreSQL")
    args = parser.parse_args(argv)
    try:
        if args.stop:
            stop_all()
            return 0
        return run(args.seconds, args.keep_db)
    except (RuntimeError, TimeoutError, pgserver.PgServerError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
