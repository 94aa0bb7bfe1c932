"""Idle cost of ``loader run`` with a year of history: 100,000 ``wal_segments`` rows and
20,000 sealed files in the WAL directory (the rest pruned).

Measures, in one run against a throwaway PostgreSQL (scripts/pgserver.py):
- the CPU of an idle ``loader run`` process plus its database backend over ``IDLE_S``
  (/proc/PID/stat utime+stime), as % of one core; the baseline is schema v1's poll
  (every row fetched, the directory listed, every second), timed in-process the same way;
- ``loader status`` wall time (the command, and its collect() in-process), against v1's
  collect pattern (every row fetched and looped over in Python);
- how long a segment renamed into the directory takes to be loaded by the idle loader.

``run()`` returns the ``archive_loader`` section of bench/results.json;
``python -m bench.archive_loader`` writes it. ``--rows``/``--files`` scale it down.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import write_section  # noqa: E402
from loader import status  # noqa: E402
from loader.parse import PARSER_VERSION  # noqa: E402
from loader.schema import init_db  # noqa: E402
from loader.tracker import RELIST_EVERY_POLLS  # noqa: E402
from scripts import pgserver  # noqa: E402
from wal import list_sealed  # noqa: E402
from wal.naming import make_name  # noqa: E402
from wal.records import encode_record, frame, seal, segment_header  # noqa: E402
from wal.segment import compressor  # noqa: E402

ROWS = 105_120  # a year of 5-minute segments
FILES = 20_000  # ~70 days kept on disk
IDLE_S = 10.0  # the measuring window
SETTLE_S = 2.0  # after start-up (one listing, one lookup of every name) before measuring
POLL_S = 1.0  # loader run's default poll
LATENCY_TRIALS = 3
BASELINE_POLLS = 5
BASE_NS = 1_786_728_467_000_000_000
ROTATE_NS = 300 * 1_000_000_000
TICK = os.sysconf("SC_CLK_TCK")
GOAL_IDLE_CPU_PCT = 1.0
GOAL_STATUS_S = 1.0
V1_POLL_SQL = (
    "SELECT id, name, status, offset_bytes, parser_version, first_event_at, last_event_at"
    " FROM wal_segments"
)
V1_STATUS_SQL = (
    "SELECT name, status, offset_bytes, frames, trades, parse_errors, parser_version,"
    " error, error_offset FROM wal_segments ORDER BY name"
)


def segment_bytes(seq: int, cctx: Any) -> tuple[str, bytes]:
    created = BASE_NS + seq * ROTATE_NS
    records = [
        segment_header(seq, created, "bench", host="bench"),
        frame(created + 1, 0, 0, "PONG"),
        seal(created + 2, 3, 1),
    ]
    return make_name(seq, created).sealed_name, cctx.compress(b"".join(map(encode_record, records)))


def build(dsn: str, wal_dir: Path, rows: int, files: int) -> None:
    """``rows`` loaded segments in the table, the newest ``files`` of them on disk."""
    cctx = compressor(3)
    first_on_disk = rows - files
    with psycopg.connect(dsn) as conn:
        init_db(conn)
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY wal_segments (name, status, offset_bytes, records, frames, parser_version,"
                " loaded_at) FROM STDIN"
            ) as copy,
        ):
            for seq in range(rows):
                name, data = segment_bytes(seq, cctx)
                if seq >= first_on_disk:
                    (wal_dir / name).write_bytes(data)
                copy.write_row((name, "loaded", len(data), 3, 1, PARSER_VERSION, "now"))
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE wal_segments")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def loader_backend(dsn: str) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'polymarket-loader'"
            ).fetchone()
        if row:
            return int(row[0])
        time.sleep(0.1)
    raise RuntimeError("loader run never connected")


def baseline_poll_cpu(dsn: str, wal_dir: Path) -> float:
    """CPU seconds (client + backend) of one v1 poll: every row, every file."""
    with psycopg.connect(dsn) as conn:
        backend = conn.info.backend_pid
        before, before_b = time.process_time(), cpu_s(backend)
        for _ in range(BASELINE_POLLS):
            rows = conn.execute(V1_POLL_SQL).fetchall()
            conn.commit()
            states = {row[1]: row for row in rows}
            todo = [p for p in list_sealed(wal_dir) if p.name not in states]
            assert not todo
        spent = time.process_time() - before + cpu_s(backend) - before_b
    return spent / BASELINE_POLLS


def baseline_status_s(dsn: str, wal_dir: Path) -> float:
    """Wall time of v1's status collection: every row into Python, then the files."""
    with psycopg.connect(dsn) as conn:
        start = time.perf_counter()
        rows = conn.execute(V1_STATUS_SQL).fetchall()
        conn.commit()
        known = {row[0]: row for row in rows}
        counts: dict[str, int] = {}
        for row in rows:
            counts[row[1]] = counts.get(row[1], 0) + 1
        for path in list_sealed(wal_dir):
            seen = known.get(path.name)
            if seen is None or seen[1] == "loading":
                path.stat()
        sum(row[3] for row in rows), sum(row[4] for row in rows)
        return time.perf_counter() - start


def new_status_s(dsn: str, wal_dir: Path) -> float:
    with psycopg.connect(dsn) as conn:
        start = time.perf_counter()
        status.collect(conn, wal_dir)
        return time.perf_counter() - start


def status_cli_s(dsn: str, wal_dir: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "loader.cli", "status", "--wal-dir", str(wal_dir), "--json"],
        env={**os.environ, "LOADER_DSN": dsn},
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def idle_cpu_pct(dsn: str, pid: int) -> float:
    backend = loader_backend(dsn)
    time.sleep(SETTLE_S)
    start, a, b = time.monotonic(), cpu_s(pid), cpu_s(backend)
    time.sleep(IDLE_S)
    spent = cpu_s(pid) - a + cpu_s(backend) - b
    return 100 * spent / (time.monotonic() - start)


def new_segment_latency_s(dsn: str, wal_dir: Path, seq: int) -> float:
    """Seconds from a segment's rename into the directory to its row being ``loaded``."""
    name, data = segment_bytes(seq, compressor(3))
    tmp = wal_dir / (name + ".open")
    tmp.write_bytes(data)
    with psycopg.connect(dsn, autocommit=True) as conn:
        start = time.perf_counter()
        os.rename(tmp, wal_dir / name)
        while True:
            row = conn.execute(
                "SELECT status FROM wal_segments WHERE name = %s", (name,)
            ).fetchone()
            if row and row[0] == "loaded":
                return time.perf_counter() - start
            if time.perf_counter() - start > 30:
                raise RuntimeError(f"{name} was not loaded within 30 s")
            time.sleep(0.005)


def relist_s(wal_dir: Path) -> float:
    """A safety-net listing as the run loop does it (names it knows are not re-parsed)."""
    known = set(status.sealed_names(wal_dir))
    start = time.perf_counter()
    status.sealed_names(wal_dir, known)
    return time.perf_counter() - start


def run(rows: int = ROWS, files: int = FILES) -> dict[str, Any]:
    """Build the archive, measure, return the ``archive_loader`` section."""
    rng = random.Random(1)
    datadir = Path(tempfile.mkdtemp(prefix="bench-archive-pg-"))
    with tempfile.TemporaryDirectory(prefix="bench-archive-wal-") as tmp:
        wal_dir = Path(tmp)
        try:
            server = pgserver.start(datadir)
            with psycopg.connect(server, autocommit=True) as conn:
                conn.execute("CREATE DATABASE archive")
            dsn = psycopg.conninfo.make_conninfo(server, dbname="archive")
            build(dsn, wal_dir, rows, files)
            base_poll = baseline_poll_cpu(dsn, wal_dir)
            base_status = min(baseline_status_s(dsn, wal_dir) for _ in range(3))
            collect_s = min(new_status_s(dsn, wal_dir) for _ in range(3))
            cli_s = min(status_cli_s(dsn, wal_dir) for _ in range(3))
            listing = min(relist_s(wal_dir) for _ in range(3))
            child = subprocess.Popen(
                [sys.executable, "-m", "loader.cli", "run", "--wal-dir", str(wal_dir)],
                env={**os.environ, "LOADER_DSN": dsn},
                cwd=ROOT,
                stderr=subprocess.DEVNULL,
            )
            try:
                idle = idle_cpu_pct(dsn, child.pid)
                latencies = []
                for i in range(LATENCY_TRIALS):
                    time.sleep(rng.uniform(0, POLL_S))  # land anywhere in the poll cycle
                    latencies.append(new_segment_latency_s(dsn, wal_dir, rows + i))
            finally:
                child.terminate()
                child.wait(timeout=30)
        finally:
            pgserver.destroy(datadir)
    base_pct = 100 * base_poll / POLL_S
    return {
        "rows": rows,
        "files": files,
        "idle_window_s": IDLE_S,
        "cpu_resolution_pct": round(100 / TICK / IDLE_S, 3),  # one clock tick in the window
        "idle_cpu_pct_of_core": round(idle, 3),
        "baseline": {
            "what": "schema v1's poll (every wal_segments row fetched, the directory listed)"
            " once per second, client + backend CPU, timed in-process in this run",
            "idle_cpu_pct_of_core": round(base_pct, 2),
            "status_collect_s": round(base_status, 4),
        },
        "ratio": round(idle / base_pct, 4),
        # What the window cannot show: a tick's resolution, and the once-a-minute listing.
        "steady_state_cpu_pct_upper_bound": round(
            max(idle, 100 / TICK / IDLE_S) + 100 * listing / (RELIST_EVERY_POLLS * POLL_S), 3
        ),
        "ratio_means": "idle loader run CPU / v1 poll CPU (goal: idle under 1% of a core)",
        "goal_idle_cpu_pct": GOAL_IDLE_CPU_PCT,
        "safety_net_relist_s": round(listing, 4),
        "safety_net_cpu_pct": round(100 * listing / (RELIST_EVERY_POLLS * POLL_S), 3),
        "status_cli_s": round(cli_s, 3),
        "status_collect_s": round(collect_s, 4),
        "status_ratio": round(collect_s / base_status, 3),
        "goal_status_s": GOAL_STATUS_S,
        "new_segment_latency_s": {
            "median": round(statistics.median(latencies), 3),
            "max": round(max(latencies), 3),
        },
        "poll_s": POLL_S,
        "postgres": "throwaway cluster, fsync off",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--files", type=int, default=FILES)
    args = parser.parse_args()
    write_section("archive_loader", run(args.rows, args.files))


if __name__ == "__main__":
    main()
