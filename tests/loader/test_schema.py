"""loader/schema.py: versioned, idempotent, concurrent-safe migrations on plain PostgreSQL,
the v1 -> v2 migration with real v1 data, and candles."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest

from loader.parse import parse_frame
from loader.schema import LATEST_VERSION, init_db
from loader.timescale import Mode
from tests.loader.conftest import (
    TRADE_COLUMNS,
    concurrent_init_db,
    db_trades,
    expected_trades,
    run_loader,
    sealed,
    server_has_timescaledb,
)
from tests.loader.helpers import (
    BASE_NS,
    real_frames,
    trade_event,
    trade_frame,
    write_segment,
)
from wal import SegmentReader
from wal.records import frame

ROOT = Path(__file__).resolve().parents[2]
ALL_VERSIONS = list(range(1, LATEST_VERSION + 1))
APPLIED_TEXT = ", ".join(map(str, ALL_VERSIONS))
V1_COPY = (
    "COPY trades (ts, token_id, side, price, size, trade_id, market, fee_rate_bps,"
    " transaction_hash, received_at, segment_id) FROM STDIN"
)


def test_init_db_is_idempotent_and_versioned(fresh_db: str) -> None:
    with psycopg.connect(fresh_db) as conn:
        first = init_db(conn)
        second = init_db(conn)
        versions = conn.execute("SELECT version FROM schema_version ORDER BY 1").fetchall()
    assert first.applied == ALL_VERSIONS and second.applied == []
    assert first.version == second.version == LATEST_VERSION
    assert versions == [(v,) for v in ALL_VERSIONS]


def test_init_db_makes_the_tables_the_server_allows_and_says_so_once(
    fresh_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Plain tables on a server without TimescaleDB (this machine); on a host that has it
    # installed, the throwaway cluster preloads it and the default makes hypertables.
    timescale = server_has_timescaledb(fresh_db)
    with caplog.at_level(logging.INFO), psycopg.connect(fresh_db) as conn:
        result = init_db(conn)
        indexes = {
            row[0]
            for row in conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'trade_rows'"
            ).fetchall()
        }
        fks = conn.execute(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'trade_rows'::regclass"
            " AND contype = 'f'"
        ).fetchone()
    assert result.timescaledb is timescale
    assert any("(token, ts DESC)" in i for i in indexes)
    assert any("USING brin (segment_id)" in i for i in indexes)
    assert fks == (0,)  # the loader's transaction links rows and segment, not a per-row FK
    word = "hypertables" if timescale else "not installed on this server: plain PostgreSQL"
    said = [r.getMessage() for r in caplog.records if word in r.getMessage()]
    assert len(said) == 1


def test_trades_view_keeps_the_v1_columns(fresh_db: str) -> None:
    with psycopg.connect(fresh_db) as conn:
        init_db(conn)
        cols = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_name = 'trades' ORDER BY ordinal_position"
        ).fetchall()
    assert cols == [
        ("ts", "timestamp with time zone"),
        ("token_id", "text"),
        ("side", "text"),
        ("price", "double precision"),
        ("size", "double precision"),
        ("trade_id", "text"),
        ("market", "text"),
        ("fee_rate_bps", "numeric"),
        ("transaction_hash", "text"),
        ("received_at", "timestamp with time zone"),
        ("segment_id", "bigint"),
    ]


def test_init_db_cli_twice(fresh_db: str) -> None:
    kind = "TimescaleDB hypertable" if server_has_timescaledb(fresh_db) else "plain PostgreSQL"
    for expected in (f"migrations applied: {APPLIED_TEXT}", "none (up to date)"):
        done = run_loader(fresh_db, "init-db", "--compress-after", "3d")
        assert done.returncode == 0, done.stderr
        assert expected in done.stdout and f"trades: {kind}" in done.stdout


def test_init_db_require_without_timescaledb_fails_before_changing_anything(
    fresh_db: str,
) -> None:
    if server_has_timescaledb(fresh_db):  # a host with it installed: require is met
        assert run_loader(fresh_db, "init-db", "--timescaledb", "require").returncode == 0
        return
    done = run_loader(fresh_db, "init-db", "--timescaledb", "require")
    assert done.returncode == 1
    assert "not installed on this server" in done.stderr and "Traceback" not in done.stderr
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute("SELECT to_regclass('schema_version')").fetchone() == (None,)


def test_init_db_off_by_environment_makes_plain_tables(fresh_db: str) -> None:
    done = run_loader(fresh_db, "init-db", env={"LOADER_TIMESCALEDB": "OFF"})
    assert done.returncode == 0, done.stderr
    assert "--timescaledb off" in done.stdout


def test_four_concurrent_init_db_on_a_fresh_database_leave_one_schema(fresh_db: str) -> None:
    results = concurrent_init_db(fresh_db)
    assert [code for code, _, _ in results] == [0, 0, 0, 0], results
    applied = [out for _, out, _ in results if f"migrations applied: {APPLIED_TEXT}" in out]
    assert len(applied) == 1
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute("SELECT version FROM schema_version ORDER BY 1").fetchall() == [
            (v,) for v in ALL_VERSIONS
        ]


def test_a_newer_schema_is_refused(fresh_db: str) -> None:
    with psycopg.connect(fresh_db) as conn:
        init_db(conn)
        conn.execute("INSERT INTO schema_version (version, timescaledb) VALUES (99, false)")
        conn.commit()
        with pytest.raises(Exception, match="newer than this loader"):
            init_db(conn)


# --- v1 -> v2 with real v1 data -------------------------------------------------------


def v1_wal(wal_dir: Path) -> list[Path]:
    """Segments of real frames plus trades with every field shape v1 stored."""
    odd = [
        trade_event(1, transaction_hash="0xABCDEF"),  # not canonical: kept as text
        trade_event(2, transaction_hash=""),
        trade_event(3, fee_rate_bps=""),
        trade_event(4, fee_rate_bps="1.5"),
        trade_event(5, transaction_hash=f"0x{'F' * 64}"),  # upper case: kept as text
    ]
    real = [
        frame(BASE_NS + i, 0, i, rec["frame"])
        for i, rec in enumerate(r for r in real_frames() if "frame" in r)
    ]
    return [
        write_segment(wal_dir, 0, [real]),
        write_segment(wal_dir, 1, [[frame(BASE_NS, 1, 0, json.dumps(odd))]]),
        write_segment(wal_dir, 2, [[trade_frame(i) for i in range(30)]]),
    ]


def load_as_v1(conn: psycopg.Connection, paths: list[Path]) -> None:
    """Load ``paths`` the way loader v1 did: rows into the v1 trades table."""
    for path in paths:
        row = conn.execute(
            "INSERT INTO wal_segments (name, parser_version, status) VALUES (%s, 1, 'loaded')"
            " RETURNING id",
            (path.name,),
        ).fetchone()
        assert row is not None
        with conn.cursor() as cur, cur.copy(V1_COPY) as copy:
            for _offset, rec in SegmentReader(path).records():
                if rec["type"] == "frame":
                    for trade in parse_frame(rec)[0]:
                        copy.write_row((*trade, row[0]))
        conn.execute(
            "UPDATE wal_segments s SET offset_bytes = %s, trades = t.n, first_event_at = t.lo,"
            " last_event_at = t.hi, loaded_at = now() FROM (SELECT count(*) n, min(ts) lo,"
            " max(ts) hi FROM trades WHERE segment_id = %s) t WHERE s.id = %s",
            (path.stat().st_size, row[0], row[0]),
        )
    conn.commit()


def test_init_db_migrates_a_v1_database_in_place_keeping_every_row(
    fresh_db: str, wal_dir: Path
) -> None:
    paths = v1_wal(wal_dir)
    with psycopg.connect(fresh_db) as conn:
        assert init_db(conn, upto=1).applied == [1]
        load_as_v1(conn, paths)
        v1_rows: Counter[Any] = Counter(
            conn.execute(f"SELECT {TRADE_COLUMNS}, segment_id FROM trades").fetchall()
        )
        result = init_db(conn)
        v2_rows: Counter[Any] = Counter(
            conn.execute(f"SELECT {TRADE_COLUMNS}, segment_id FROM trades").fetchall()
        )
        texts = conn.execute(
            "SELECT count(*) FROM trade_rows WHERE tx_hash_text IS NOT NULL"
        ).fetchone()
    assert result.applied == ALL_VERSIONS[1:]
    assert sum(v1_rows.values()) > 35 and v2_rows == v1_rows
    assert db_trades(fresh_db) == expected_trades(sealed(wal_dir))
    assert texts == (2,)


def test_after_the_migration_loading_goes_on_exactly_once(fresh_db: str, wal_dir: Path) -> None:
    paths = v1_wal(wal_dir)
    with psycopg.connect(fresh_db) as conn:
        init_db(conn, upto=1)
        load_as_v1(conn, paths[:2])
        init_db(conn)
    done = run_loader(fresh_db, "run", "--wal-dir", str(wal_dir), "--once")
    assert done.returncode == 0, done.stderr
    assert db_trades(fresh_db) == expected_trades(paths)
    done = run_loader(fresh_db, "reparse", "--wal-dir", str(wal_dir), "--all")
    assert done.returncode == 0, done.stderr
    assert db_trades(fresh_db) == expected_trades(paths)


# --- candles ---------------------------------------------------------------------------


def test_trades_1m_gives_one_candle_per_minute_and_token(fresh_db: str, wal_dir: Path) -> None:
    minute_ms = 60_000
    start_ms = (BASE_NS // 1_000_000 // minute_ms + 1) * minute_ms
    events = [
        trade_event(0, price="0.50", size="10", side="BUY", timestamp=str(start_ms + 1_000)),
        trade_event(7, price="0.70", size="1", side="SELL", timestamp=str(start_ms + 2_000)),
        trade_event(14, price="0.40", size="2", side="SELL", timestamp=str(start_ms + 3_000)),
        trade_event(21, price="0.60", size="4", side="BUY", timestamp=str(start_ms + 59_999)),
        trade_event(28, price="0.90", size="5", side="BUY", timestamp=str(start_ms + 60_000)),
    ]
    assert len({e["asset_id"] for e in events}) == 1
    write_segment(wal_dir, 0, [[frame(BASE_NS, 0, 0, json.dumps(events))]])
    with psycopg.connect(fresh_db) as conn:
        init_db(conn, mode=Mode.OFF)
    assert run_loader(fresh_db, "run", "--wal-dir", str(wal_dir), "--once").returncode == 0
    with psycopg.connect(fresh_db) as conn:
        candles = conn.execute(
            "SELECT (extract(epoch FROM bucket) * 1000)::bigint, token_id = %s, market = %s,"
            " open, high, low, close, volume, notional, trades, buy_volume, sell_volume"
            " FROM trades_1m ORDER BY bucket",
            (events[0]["asset_id"], events[0]["market"]),
        ).fetchall()
    assert candles == [
        (start_ms, True, True, 0.5, 0.7, 0.4, 0.6, 17.0, 5.0 + 0.7 + 0.8 + 2.4, 4, 14.0, 3.0),
        (start_ms + minute_ms, True, True, 0.9, 0.9, 0.9, 0.9, 5.0, 4.5, 1, 5.0, 0.0),
    ]
