"""The loader on a real TimescaleDB (the `tsdb_db` fixture): hypertable, compression and
its policy, loading into and reparsing compressed chunks past the decompression limit,
recompression without bloat, continuous candles, and the migrations.

The server serves one client at a time, so a test never holds a connection while a
loader process runs.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest

from loader import hypertables
from loader.schema import DEFAULT_COMPRESS_AFTER, init_db
from loader.timescale import Mode
from tests.loader.conftest import (
    TRADE_COLUMNS,
    concurrent_init_db,
    db_trades,
    expected_trades,
    run_loader,
    sealed,
)
from tests.loader.helpers import BASE_MS, BASE_NS, trade_event, write_segment
from tests.loader.test_schema import load_as_v1, v1_wal
from tests.timeouts import TIMEOUT_S
from wal.records import Record, frame

ROOT = Path(__file__).resolve().parents[2]
DAY_MS = 86_400_000
# Above timescaledb.max_tuples_decompressed_per_dml_transaction's default of 100,000.
OLD_ROWS = 105_000


def spread_segment(wal_dir: Path, seq: int, trades: int, span_ms: int, first: int = 0) -> Path:
    """A segment of ``trades`` trades whose event times spread over ``span_ms``."""
    per_frame, batches, batch = 100, [], []
    step = max(1, span_ms // trades)
    for start in range(first, first + trades, per_frame):
        events = [
            trade_event(i, timestamp=str(BASE_MS + (i - first) * step))
            for i in range(start, min(start + per_frame, first + trades))
        ]
        batch.append(frame(BASE_NS + start * 1000, 0, start, json.dumps(events)))
        if len(batch) == 20:
            batches.append(batch)
            batch = []
    batches.append(batch)
    return write_segment(wal_dir, seq, batches)


def days_segment(wal_dir: Path, seq: int, days: range, per_day: int = 50) -> Path:
    """A segment with ``per_day`` trades on each of ``days`` (day 0 = BASE_MS)."""
    records: list[Record] = []
    for day in days:
        events = [
            trade_event(seq * 10_000 + day * per_day + k, timestamp=str(BASE_MS + day * DAY_MS + k))
            for k in range(per_day)
        ]
        records.append(frame(BASE_NS + day, 0, day, json.dumps(events)))
    return write_segment(wal_dir, seq, [records])


def compress_all(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT compress_chunk(c, true) FROM show_chunks('trade_rows') c")
        return len(rows.fetchall())


def table_bytes(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT hypertable_size('trade_rows')").fetchone()
    assert row is not None
    return int(row[0])


def loader_ok(dsn: str, *args: str) -> str:
    done = run_loader(dsn, *args, timeout=TIMEOUT_S * 12)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_init_db_makes_a_compressed_hypertable_with_policy_and_continuous_candles(
    tsdb_db: str, wal_dir: Path
) -> None:
    out = loader_ok(tsdb_db, "init-db", "--timescaledb", "require")
    assert "TimescaleDB hypertable (compressed after 7 days)" in out
    assert "trades_1m is a continuous aggregate" in out
    with psycopg.connect(tsdb_db) as conn:
        setup = hypertables.describe(conn)
        settings = conn.execute(
            "SELECT attname, segmentby_column_index, orderby_column_index, orderby_asc"
            " FROM timescaledb_information.compression_settings"
            " WHERE hypertable_name = 'trade_rows' ORDER BY attname"
        ).fetchall()
    assert setup == hypertables.Setup(True, True, True, DEFAULT_COMPRESS_AFTER)
    assert ("token", 1, None, None) in settings and ("ts", None, 1, False) in settings
    status = run_loader(tsdb_db, "status", "--wal-dir", str(wal_dir), "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["database"]["trades"] == "hypertable"


def test_init_db_keeps_the_policy_job_and_alters_it_only_when_compress_after_changes(
    tsdb_db: str,
) -> None:
    def job() -> tuple[Any, ...]:
        with psycopg.connect(tsdb_db) as conn:
            row = conn.execute(
                "SELECT job_id, config->>'compress_after' FROM timescaledb_information.jobs"
                " WHERE proc_name = 'policy_compression' AND hypertable_name = 'trade_rows'"
            ).fetchall()
        assert len(row) == 1
        return tuple(row[0])

    loader_ok(tsdb_db, "init-db", "--compress-after", "3d")
    first = job()
    loader_ok(tsdb_db, "init-db", "--compress-after", "3d")
    assert job() == first
    loader_ok(tsdb_db, "init-db", "--compress-after", "12h")
    assert job() == (first[0], "12:00:00")


def test_loading_into_compressed_chunks_and_reparse_all_leave_exact_rows_and_no_bloat(
    tsdb_db: str, wal_dir: Path
) -> None:
    loader_ok(tsdb_db, "init-db")
    days_segment(wal_dir, 0, range(0, 3))
    days_segment(wal_dir, 1, range(0, 3))
    loader_ok(tsdb_db, "run", "--wal-dir", str(wal_dir), "--once")
    assert compress_all(tsdb_db) == 3
    days_segment(wal_dir, 2, range(1, 4))  # rows into two compressed chunks and a new one
    loader_ok(tsdb_db, "run", "--wal-dir", str(wal_dir), "--once")
    assert db_trades(tsdb_db) == expected_trades(sealed(wal_dir))
    compress_all(tsdb_db)
    before = table_bytes(tsdb_db)
    for _ in range(2):
        out = loader_ok(tsdb_db, "reparse", "--wal-dir", str(wal_dir), "--all")
        assert "reparsed 3 segments, 450 trades" in out
        assert db_trades(tsdb_db) == expected_trades(sealed(wal_dir))
    assert table_bytes(tsdb_db) <= 1.5 * before


def test_reparse_of_a_segment_spanning_a_compressed_chunk_past_the_decompression_limit(
    tsdb_db: str, wal_dir: Path
) -> None:
    # The rows an older parser left for the segment: more than the default limit, made
    # on the server (quick); the reparse must delete them all and load the WAL's rows.
    path = spread_segment(wal_dir, 0, 2_000, span_ms=DAY_MS // 8)  # within one chunk
    loader_ok(tsdb_db, "init-db")
    loader_ok(tsdb_db, "run", "--wal-dir", str(wal_dir), "--once")
    with psycopg.connect(tsdb_db) as conn:
        conn.execute(
            "INSERT INTO trade_rows (ts, token, buy, price, size, received_at, segment_id)"
            " SELECT s.first_event_at + (s.last_event_at - s.first_event_at) * (g / %s::float8),"
            " k.id, g %% 2 = 0, 0.5, g, now(), s.id"
            " FROM wal_segments s, (SELECT id FROM token_keys LIMIT 1) k,"
            " generate_series(1, %s) g",
            (OLD_ROWS, OLD_ROWS),
        )
    assert compress_all(tsdb_db) == 1
    with psycopg.connect(tsdb_db) as conn:  # the default limit refuses a plain DELETE
        with pytest.raises(psycopg.errors.ConfigurationLimitExceeded):
            conn.execute("DELETE FROM trade_rows WHERE segment_id = 1")
        conn.rollback()
    out = loader_ok(tsdb_db, "reparse", "--wal-dir", str(wal_dir), "--segment", path.name)
    assert "reparsed 1 segments, 2000 trades" in out
    assert db_trades(tsdb_db) == expected_trades([path])
    with psycopg.connect(tsdb_db) as conn:
        chunks = conn.execute(
            "SELECT count(*) FILTER (WHERE is_compressed), count(*)"
            " FROM timescaledb_information.chunks WHERE hypertable_name = 'trade_rows'"
        ).fetchone()
    assert chunks == (1, 1)


def candles_expected(paths: list[Path]) -> Counter[tuple[Any, ...]]:
    """trades_1m computed in Python from what the parser makes of ``paths``."""
    groups: dict[tuple[Any, ...], list[Any]] = {}
    for row in expected_trades(paths).elements():
        ts, token, side, price, size = row[0], row[1], row[2], row[3], row[4]
        bucket = ts.replace(second=0, microsecond=0)
        groups.setdefault((bucket, token, row[6]), []).append((ts, price, size, side))
    out: Counter[tuple[Any, ...]] = Counter()
    for (bucket, token, market), trades in groups.items():
        trades.sort(key=lambda t: t[0])
        out[
            (
                bucket,
                token,
                market,
                trades[0][1],
                max(t[1] for t in trades),
                min(t[1] for t in trades),
                trades[-1][1],
                round(sum(t[2] for t in trades), 6),
                len(trades),
                round(sum(t[2] for t in trades if t[3] == "BUY"), 6),
            )
        ] += 1
    return out


CANDLE_QUERY = (
    "SELECT bucket, token_id, market, open, high, low, close, round(volume::numeric, 6)::float8,"
    " trades, round(buy_volume::numeric, 6)::float8 FROM trades_1m"
)


def test_continuous_candles_show_the_latest_minutes_and_match_after_a_refresh(
    tsdb_db: str, wal_dir: Path
) -> None:
    loader_ok(tsdb_db, "init-db")
    paths = [spread_segment(wal_dir, 0, 3_000, span_ms=10 * 60_000)]
    loader_ok(tsdb_db, "run", "--wal-dir", str(wal_dir), "--once")
    with psycopg.connect(tsdb_db, autocommit=True) as conn:
        realtime = Counter(conn.execute(CANDLE_QUERY).fetchall())
        conn.execute("CALL refresh_continuous_aggregate('trade_candles_1m', NULL, NULL)")
        materialized = Counter(conn.execute(CANDLE_QUERY).fetchall())
        rows = conn.execute("SELECT count(*) FROM trade_candles_1m").fetchone()
    expected = candles_expected(paths)
    assert realtime == expected == materialized and rows == (sum(expected.values()),)


def test_a_v1_compressed_hypertable_migrates_keeping_every_row(tsdb_db: str, wal_dir: Path) -> None:
    paths = v1_wal(wal_dir)
    with psycopg.connect(tsdb_db) as conn:
        init_db(conn, upto=1)
        load_as_v1(conn, paths)
        conn.commit()
        conn.autocommit = True
        conn.execute("SELECT compress_chunk(c) FROM show_chunks('trades') c")
        v1_rows = Counter(conn.execute(f"SELECT {TRADE_COLUMNS}, segment_id FROM trades"))
        conn.autocommit = False
        result = init_db(conn)
        v2_rows = Counter(conn.execute(f"SELECT {TRADE_COLUMNS}, segment_id FROM trades"))
        setup = hypertables.describe(conn)
    assert result.applied[0] == 2 and setup.hypertable and setup.compression
    assert v2_rows == v1_rows and sum(v1_rows.values()) > 35


def test_plain_tables_made_with_off_become_a_hypertable_under_auto(
    tsdb_db: str, wal_dir: Path
) -> None:
    loader_ok(tsdb_db, "init-db", "--timescaledb", "off")
    days_segment(wal_dir, 0, range(0, 2))
    loader_ok(tsdb_db, "run", "--wal-dir", str(wal_dir), "--once")
    with psycopg.connect(tsdb_db) as conn:
        assert not hypertables.is_hypertable(conn)
    out = loader_ok(tsdb_db, "init-db")
    assert "TimescaleDB hypertable" in out
    assert db_trades(tsdb_db) == expected_trades(sealed(wal_dir))
    with psycopg.connect(tsdb_db) as conn:
        chunks = conn.execute("SELECT count(*) FROM show_chunks('trade_rows')").fetchone()
    assert chunks == (2,)


def test_concurrent_init_db_on_timescaledb_all_succeed(tsdb_db: str) -> None:
    results = concurrent_init_db(tsdb_db)
    assert [code for code, _, _ in results] == [0, 0, 0, 0], results
    assert sum("migrations applied: 1, 2" in out for _, out, _ in results) == 1
    with psycopg.connect(tsdb_db) as conn:
        jobs = conn.execute(
            "SELECT count(*) FROM timescaledb_information.jobs WHERE hypertable_name IN"
            " ('trade_rows', 'trade_candles_1m')"
        ).fetchone()
    assert jobs == (2,)


@pytest.mark.parametrize("mode", [Mode.AUTO, Mode.REQUIRE])
def test_inspection_sees_the_timescale_license_build(tsdb_db: str, mode: Mode) -> None:
    from loader.timescale import decide, inspect

    with psycopg.connect(tsdb_db) as conn:
        facts = inspect(conn)
    assert facts.available and facts.preloaded and facts.installed
    assert decide(facts, mode).compression


def test_replicas_and_gaps_on_compressed_chunks_load_once_and_reparse_identically(
    tsdb_db: str, wal_dir: Path
) -> None:
    from tests.loader import replica_wal
    from tests.loader.test_replicas import BOTH_DOWN, db_gaps, expected_gaps, loaded_keys

    wal = replica_wal.build(wal_dir, both_down=BOTH_DOWN)
    loader_ok(tsdb_db, "init-db")
    loader_ok(tsdb_db, "run", "--wal-dir", str(wal_dir), "--once", "--batch-trades", "7")
    assert loaded_keys(tsdb_db) == wal.trades
    gaps = db_gaps(tsdb_db)
    assert [(g[0], g[1]) for g in gaps] == expected_gaps(wal)
    compress_all(tsdb_db)
    loader_ok(tsdb_db, "reparse", "--wal-dir", str(wal_dir), "--all")
    assert loaded_keys(tsdb_db) == wal.trades and db_gaps(tsdb_db) == gaps
