"""TimescaleDB objects of the book tables, made to match the :class:`~loader.timescale.Plan`
the way :mod:`loader.hypertables` does for ``trade_rows``: each storage table becomes a
hypertable on ``ts`` when it should be one, compression (``segmentby token``, ``orderby
ts DESC``: per-token time queries, and a token's book rows compress well together) is
switched on once, and one compression policy per table is created once and altered only
when ``--compress-after`` changes.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import psycopg

from loader.bookschema import BOOK_TABLES
from loader.hypertables import ensure_compression_policy, try_enable_compression
from loader.timescale import Plan

log = logging.getLogger(__name__)


def converge(
    conn: psycopg.Connection, plan: Plan, compress_after: timedelta, chunk_interval: timedelta
) -> list[str]:
    """Make the book tables' TimescaleDB objects match ``plan``; returns the hypertables."""
    hypertables = []
    for table in BOOK_TABLES:
        info = _info(conn, table)
        if info is None and plan.timescaledb:
            conn.execute(
                "SELECT create_hypertable(%s, 'ts', chunk_time_interval => %s,"
                " create_default_indexes => false, migrate_data => true)",
                (table, chunk_interval),
            )
            info = False
        if info is None:
            continue
        hypertables.append(table)
        if plan.compression and (info or try_enable_compression(conn, table)):
            ensure_compression_policy(conn, compress_after, table)
    return hypertables


def _info(conn: psycopg.Connection, table: str) -> bool | None:
    """None: not a hypertable; else whether compression is on."""
    row = conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    if not row or not row[0]:
        return None
    found = conn.execute(
        "SELECT compression_enabled FROM timescaledb_information.hypertables"
        " WHERE hypertable_name = %s",
        (table,),
    ).fetchone()
    return None if found is None else bool(found[0])
