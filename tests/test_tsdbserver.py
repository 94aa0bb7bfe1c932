"""The TimescaleDB test server (scripts/tsdb/server.mjs via scripts/tsdbserver.py).

psycopg 3 through the wire-protocol server in front of PGlite: both query protocols,
COPY, pipelines, transactions, errors, the one-client queue and the session reset
between clients, and the TimescaleDB features the loader uses. One server for the file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import psycopg
import pytest

from tests.conftest import TsdbServer

COPY_ROWS = 200_000  # a binary COPY of many CopyData messages, as the loader sends
EXECUTEMANY_ROWS = 5_000  # enough pipelined Bind/Execute to cross many 8192-byte marks
PGLITE_CHUNK = 8192  # the call boundary PGlite mishandles (see server.mjs)


@pytest.fixture
def pglite(tsdb_server: TsdbServer) -> TsdbServer:
    """The PGlite server itself (these tests are about it, not about a real TimescaleDB)."""
    if not tsdb_server.pglite:
        pytest.fail(
            "tests/test_tsdbserver.py tests the PGlite server, but LOADER_TEST_DSN names a "
            "real TimescaleDB: run this file without LOADER_TEST_DSN",
            pytrace=False,
        )
    return tsdb_server


@pytest.fixture
def conn(tsdb_db: str, pglite: TsdbServer) -> Iterator[psycopg.Connection]:
    with psycopg.connect(tsdb_db, autocommit=True) as connection:
        yield connection


def test_simple_and_extended_protocol_answer(conn: psycopg.Connection) -> None:
    cur = conn.execute("SELECT 1 + 1; SELECT 'two'")
    assert cur.fetchone() == (2,)
    assert cur.nextset() and cur.fetchone() == ("two",)
    assert conn.execute("SELECT %s::int * 2, %s::text", (21, "x")).fetchone() == (42, "x")
    assert conn.execute("SELECT %b::bytea", (b"\x00\xff",)).fetchone() == (b"\x00\xff",)
    assert conn.info.parameter_status("TimeZone") == "UTC"
    assert conn.execute("SHOW TimeZone").fetchone() == ("UTC",)


def test_binary_copy_of_200k_rows_arrives_whole(conn: psycopg.Connection) -> None:
    conn.execute("CREATE TABLE t (id bigint, body text, price double precision)")
    digest = hashlib.sha256()
    copy = "COPY t (id, body, price) FROM STDIN (FORMAT BINARY)"
    with conn.cursor() as cur, cur.copy(copy) as cp:
        cp.set_types(["int8", "text", "float8"])
        for i in range(COPY_ROWS):
            cp.write_row((i, f"row-{i}", i / 4))
            digest.update(f"{i},row-{i};".encode())
    count, total, prices = conn.execute("SELECT count(*), sum(id), sum(price) FROM t").fetchone()
    assert (count, total, prices) == (COPY_ROWS, COPY_ROWS * (COPY_ROWS - 1) // 2, total / 4)
    back = hashlib.sha256()
    with conn.cursor() as cur:
        for i, body in cur.execute("SELECT id, body FROM t ORDER BY id"):
            back.update(f"{i},{body};".encode())
    assert back.hexdigest() == digest.hexdigest()


def test_executemany_inserts_every_row(conn: psycopg.Connection) -> None:
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, body text)")
    rows = [(i, "x" * (i % 301)) for i in range(EXECUTEMANY_ROWS)]
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO t VALUES (%s, %s)", rows)
    assert conn.execute("SELECT count(*), sum(length(body)) FROM t").fetchone() == (
        EXECUTEMANY_ROWS,
        sum(len(body) for _, body in rows),
    )
