"""loader/schema.py: versioned, idempotent migrations; the plain-PostgreSQL path."""

from __future__ import annotations

import logging

import psycopg
import pytest

from loader.schema import LATEST_VERSION, MIGRATIONS, init_db
from tests.loader.conftest import run_loader


def test_init_db_is_idempotent_and_versioned(fresh_db: str) -> None:
    with psycopg.connect(fresh_db) as conn:
        first = init_db(conn)
        second = init_db(conn)
        versions = conn.execute("SELECT version FROM schema_version").fetchall()
    every = [version for version, _ in MIGRATIONS]
    assert first.applied == every and second.applied == []
    assert first.version == second.version == LATEST_VERSION
    assert sorted(versions) == [(v,) for v in every]


def test_init_db_without_timescaledb_makes_a_plain_table_with_indexes(
    fresh_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO), psycopg.connect(fresh_db) as conn:
        result = init_db(conn)
        indexes = {
            row[0]
            for row in conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'trades'"
            ).fetchall()
        }
        fk = conn.execute(
            "SELECT confrelid::regclass::text FROM pg_constraint"
            " WHERE conrelid = 'trades'::regclass AND contype = 'f'"
        ).fetchone()
    assert result.timescaledb is False
    assert any("(token_id, ts DESC)" in i for i in indexes)
    assert any("(segment_id, ts)" in i for i in indexes)
    assert fk == ("wal_segments",)
    said = [r.getMessage() for r in caplog.records if "TimescaleDB not found" in r.getMessage()]
    assert len(said) == 1


def test_trades_columns_match_the_design(fresh_db: str) -> None:
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
    every = ", ".join(str(version) for version, _ in MIGRATIONS)
    for expected in (f"migrations applied: {every}", "none (up to date)"):
        done = run_loader(fresh_db, "init-db", "--compress-after", "3d")
        assert done.returncode == 0, done.stderr
        assert expected in done.stdout and "plain PostgreSQL table" in done.stdout
