"""Schema migration 3: a v1 database gains status ``unreadable`` and the retry columns."""

from __future__ import annotations

import psycopg
import pytest

from loader.schema import _SCHEMA_VERSION_TABLE, SEGMENT_STATUS_CHECK, _migration_1, init_db
from loader.timescale import Mode, decide, inspect


def test_migration_3_upgrades_a_v1_database_and_keeps_its_rows(fresh_db: str) -> None:
    with psycopg.connect(fresh_db) as conn:
        plain = decide(inspect(conn), Mode.OFF)
        conn.execute(_SCHEMA_VERSION_TABLE)
        _migration_1(conn, plain)
        conn.execute("INSERT INTO schema_version (version, timescaledb) VALUES (1, false)")
        conn.execute("INSERT INTO wal_segments (name, parser_version) VALUES ('a', 1)")
        conn.commit()
        assert init_db(conn).applied == [2, 3, 4]
        conn.execute(
            "INSERT INTO wal_segments (name, parser_version, status, tries, retry_at)"
            " VALUES ('b', 1, 'unreadable', 1, now())"
        )
        rows = conn.execute("SELECT name, status, tries FROM wal_segments ORDER BY name").fetchall()
        checks = conn.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'wal_segments'::regclass"
            " AND contype = 'c'"
        ).fetchall()
        conn.commit()
        assert rows == [("a", "loading", 0), ("b", "unreadable", 1)]
        assert checks == [(SEGMENT_STATUS_CHECK,)]
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE wal_segments SET status = 'lost' WHERE name = 'a'")


def test_unfinished_segments_are_found_through_a_partial_index(db: str) -> None:
    with psycopg.connect(db) as conn:
        [(definition,)] = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'wal_segments_unfinished'"
        ).fetchall()
    assert "WHERE (status <> 'loaded'::text)" in definition
