"""The TimescaleDB test server (scripts/tsdb/server.mjs via scripts/tsdbserver.py).

psycopg 3 through the wire-protocol server in front of PGlite: both query protocols,
COPY, pipelines, transactions, errors, the one-client queue and the session reset
between clients, and the TimescaleDB features the loader uses. One server for the file.
"""

from __future__ import annotations

import hashlib
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import errors

from scripts import tsdbserver
from tests.conftest import TsdbServer
from tests.timeouts import TIMEOUT_S

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


def test_text_copy_in_and_out(conn: psycopg.Connection) -> None:
    conn.execute("CREATE TABLE t (id int, body text)")
    with conn.cursor() as cur, cur.copy("COPY t FROM STDIN") as cp:
        for i in range(1000):
            cp.write_row((i, f"tab\there {i}"))
    assert conn.execute("SELECT count(*), max(body) FROM t").fetchone() == (1000, "tab\there 999")
    with conn.cursor() as cur, cur.copy("COPY (SELECT id FROM t ORDER BY id) TO STDOUT") as cp:
        out = b"".join(bytes(chunk) for chunk in cp)
    assert out == b"".join(f"{i}\n".encode() for i in range(1000))


def test_commit_keeps_and_rollback_discards(tsdb_db: str, pglite: TsdbServer) -> None:
    with psycopg.connect(tsdb_db) as conn:
        conn.execute("CREATE TABLE t (id int)")
        conn.execute("INSERT INTO t VALUES (1)")
        conn.commit()
        conn.execute("INSERT INTO t VALUES (2)")
        conn.rollback()
        with conn.transaction():
            conn.execute("INSERT INTO t VALUES (3)")
        assert conn.execute("SELECT array_agg(id ORDER BY id) FROM t").fetchone() == ([1, 3],)


def test_error_gives_its_sqlstate_and_the_session_goes_on(conn: psycopg.Connection) -> None:
    conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
    conn.execute("INSERT INTO t VALUES (%s)", (1,))
    with pytest.raises(errors.UniqueViolation) as caught:
        conn.execute("INSERT INTO t VALUES (%s)", (1,))
    assert caught.value.sqlstate == "23505"
    with pytest.raises(psycopg.Error) as caught:
        conn.execute("SELECT * FROM missing_table")
    assert caught.value.sqlstate == "42P01"
    with pytest.raises(errors.UniqueViolation), conn.pipeline():
        conn.execute("INSERT INTO t VALUES (%s)", (2,))
        conn.execute("INSERT INTO t VALUES (%s)", (2,))
    # One Sync for the pipeline: one implicit transaction, undone whole (as by PostgreSQL).
    assert conn.execute("SELECT array_agg(id ORDER BY id) FROM t").fetchone() == ([1],)


def test_next_client_sees_no_prepared_statement_temp_table_or_setting(
    tsdb_db: str, pglite: TsdbServer
) -> None:
    query = "SELECT %s::int + 1"
    for _ in range(2):  # the second client reuses psycopg's names: _pg3_0 must be free
        with psycopg.connect(tsdb_db, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone() == (0,)
            assert conn.execute("SELECT to_regclass('scratch')").fetchone() == (None,)
            assert conn.execute("SHOW TimeZone").fetchone() == ("UTC",)
            assert conn.execute("SHOW search_path").fetchone() == ("public",)
            for i in range(12):  # psycopg prepares a query after its 5th execution
                assert conn.execute(query, (i,)).fetchone() == (i + 1,)
            names = conn.execute("SELECT name FROM pg_prepared_statements").fetchall()
            assert ("_pg3_0",) in names
            conn.execute("CREATE TEMP TABLE scratch (id int)")
            conn.execute("SET TimeZone TO 'Europe/Paris'")
            conn.execute("SET search_path TO pg_catalog")


def test_advisory_lock_of_a_closed_client_is_free_for_the_next(
    tsdb_db: str, pglite: TsdbServer
) -> None:
    with psycopg.connect(tsdb_db, autocommit=True) as conn:
        assert conn.execute("SELECT pg_try_advisory_lock(42)").fetchone() == (True,)
    with psycopg.connect(tsdb_db, autocommit=True) as conn:
        assert conn.execute("SELECT pg_try_advisory_lock(42)").fetchone() == (True,)
        assert conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()
    with psycopg.connect(tsdb_db) as conn:  # an open transaction ended by closing
        conn.execute("SELECT pg_advisory_xact_lock(43)")
    with psycopg.connect(tsdb_db, autocommit=True) as conn:
        assert conn.execute("SELECT pg_try_advisory_lock(43)").fetchone() == (True,)


def test_second_client_waits_for_the_first_then_works(tsdb_db: str, pglite: TsdbServer) -> None:
    first_closed = threading.Event()
    seen: list[object] = []

    def second() -> None:
        try:
            with psycopg.connect(tsdb_db, autocommit=True) as conn:
                seen.append(first_closed.is_set())
                seen.append(conn.execute("SELECT count(*) FROM t").fetchone())
        except Exception as exc:  # reported by the assertion below
            seen.append(exc)

    with psycopg.connect(tsdb_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int)")
        waiter = threading.Thread(target=second)
        waiter.start()
        conn.execute("INSERT INTO t SELECT generate_series(1, 10)")
        waiter.join(timeout=0.5)  # not a timing assertion: it must still be waiting anyway
        assert waiter.is_alive()
        first_closed.set()
    waiter.join(timeout=TIMEOUT_S)
    assert seen == [True, (10,)]


def test_killed_client_leaves_no_transaction_table_or_lock(
    tsdb_db: str, pglite: TsdbServer
) -> None:
    script = (
        "import sys, psycopg\n"
        "conn = psycopg.connect(sys.argv[1])\n"
        "conn.execute('CREATE TABLE half_done (id int)')\n"
        "conn.execute('INSERT INTO half_done VALUES (1)')\n"
        "conn.execute('SELECT pg_advisory_lock(7)')\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, tsdb_db],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
    finally:
        child.kill()
        child.wait()
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                stream.close()
    with psycopg.connect(tsdb_db, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('half_done')").fetchone() == (None,)
        assert conn.execute("SELECT pg_try_advisory_lock(7)").fetchone() == (True,)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_cancel_request_is_accepted_and_ignored(conn: psycopg.Connection) -> None:
    conn.cancel()
    assert conn.execute("SELECT 1").fetchone() == (1,)


# --- raw protocol: what psycopg would not send on purpose -------------------------------


def _message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def _raw_client(dsn: str) -> socket.socket:
    port = int(psycopg.conninfo.conninfo_to_dict(dsn)["port"])  # type: ignore[arg-type]
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
    params = b"user\x00postgres\x00database\x00template1\x00\x00"
    sock.sendall(struct.pack("!ii", len(params) + 8, 196608) + params)
    _read_until(sock, b"Z", 1)
    return sock


def _read_until(sock: socket.socket, kind: bytes, count: int) -> list[tuple[bytes, bytes]]:
    """Messages from the server until ``count`` of type ``kind`` (or the socket closes)."""
    data, messages, seen = b"", [], 0
    while seen < count:
        while len(data) < 5 or len(data) < 1 + struct.unpack("!i", data[1:5])[0]:
            chunk = sock.recv(65536)
            if not chunk:
                return messages
            data += chunk
        length = struct.unpack("!i", data[1:5])[0]
        messages.append((data[:1], data[5 : 1 + length]))
        seen += data[:1] == kind
        data = data[1 + length :]
    return messages


def test_message_ending_on_an_8192_byte_mark_does_not_hide_the_next(
    tsdb_db: str, pglite: TsdbServer
) -> None:
    head = b"SELECT 'first' -- "
    padding = PGLITE_CHUNK - 5 - len(head) - 1  # the whole Query message is 8192 bytes
    first = _message(b"Q", head + b"x" * padding + b"\x00")
    assert len(first) == PGLITE_CHUNK
    with _raw_client(tsdb_db) as sock:
        sock.sendall(first + _message(b"Q", b"SELECT 'second'\x00"))
        rows = [body for kind, body in _read_until(sock, b"Z", 2) if kind == b"D"]
    assert [
        row.endswith(value) for row, value in zip(rows, [b"first", b"second"], strict=True)
    ] == [
        True,
        True,
    ]


def test_bad_client_input_ends_that_client_only(tsdb_db: str, pglite: TsdbServer) -> None:
    with _raw_client(tsdb_db) as sock:
        sock.sendall(_message(b"z", b""))
        replies = _read_until(sock, b"Z", 1)
    assert replies and replies[0][0] == b"E" and b"08P01" in replies[0][1]
    with _raw_client(tsdb_db) as sock:
        sock.sendall(b"Q" + struct.pack("!i", 2))
        replies = _read_until(sock, b"Z", 1)
    assert replies and replies[0][0] == b"E"
    with psycopg.connect(tsdb_db) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


# --- TimescaleDB -------------------------------------------------------------------------


def _hypertable_with_three_days(conn: psycopg.Connection) -> None:
    conn.execute(
        "CREATE TABLE trades (ts timestamptz NOT NULL, token_id text NOT NULL, price float8)"
    )
    conn.execute(
        "SELECT create_hypertable('trades', 'ts', chunk_time_interval => '1 day'::interval)"
    )
    conn.execute(
        "INSERT INTO trades SELECT ts, tok, 0.5 FROM generate_series("
        "'2026-01-01 00:00+00'::timestamptz, '2026-01-03 23:00+00', '1 hour') ts, "
        "unnest(ARRAY['a', 'b']) tok"
    )


def test_hypertable_compression_and_dml_on_compressed_chunks(conn: psycopg.Connection) -> None:
    _hypertable_with_three_days(conn)
    conn.execute(
        "ALTER TABLE trades SET (timescaledb.compress, timescaledb.compress_segmentby = "
        "'token_id', timescaledb.compress_orderby = 'ts')"
    )
    compressed = conn.execute(
        "SELECT count(compress_chunk(c)) FROM show_chunks('trades', "
        "older_than => '2026-01-03 00:00+00'::timestamptz) c"
    ).fetchone()
    assert compressed == (2,)
    assert conn.execute(
        "SELECT count(*) FILTER (WHERE is_compressed), count(*) "
        "FROM timescaledb_information.chunks WHERE hypertable_name = 'trades'"
    ).fetchone() == (2, 3)
    conn.execute("INSERT INTO trades VALUES ('2026-01-01 12:30+00', 'a', 0.7)")
    deleted = conn.execute(
        "DELETE FROM trades WHERE token_id = 'b' AND ts < '2026-01-02 00:00+00'"
    ).rowcount
    assert deleted == 24
    assert conn.execute("SELECT count(*) FROM trades").fetchone() == (3 * 48 + 1 - 24,)

    job = conn.execute("SELECT add_compression_policy('trades', '1 day'::interval)").fetchone()
    assert job is not None
    conn.execute("CALL run_job(%s)", (job[0],))
    assert conn.execute(
        "SELECT bool_and(is_compressed) FROM timescaledb_information.chunks "
        "WHERE hypertable_name = 'trades'"
    ).fetchone() == (True,)
    assert conn.execute("SELECT count(*) FROM trades").fetchone() == (3 * 48 + 1 - 24,)


def test_continuous_aggregate_with_real_time_rows(conn: psycopg.Connection) -> None:
    _hypertable_with_three_days(conn)
    conn.execute(
        "CREATE MATERIALIZED VIEW daily WITH (timescaledb.continuous, "
        "timescaledb.materialized_only = false) AS SELECT time_bucket('1 day', ts) AS day, "
        "token_id, count(*) AS n FROM trades GROUP BY 1, 2 WITH NO DATA"
    )
    query = "SELECT sum(n), count(*) FROM daily"
    assert conn.execute(query).fetchone() == (144, 6)
    conn.execute("CALL refresh_continuous_aggregate('daily', NULL, NULL)")
    conn.execute("INSERT INTO trades VALUES ('2026-01-05 00:00+00', 'a', 1)")
    assert conn.execute(query).fetchone() == (145, 7)


def test_clean_state_leaves_nothing_of_the_previous_test(tsdb_db: str, pglite: TsdbServer) -> None:
    with psycopg.connect(tsdb_db, autocommit=True) as conn:
        _hypertable_with_three_days(conn)
        conn.execute("ALTER TABLE trades SET (timescaledb.compress)")
        conn.execute("SELECT compress_chunk(c) FROM show_chunks('trades') c")
        conn.execute("SELECT add_compression_policy('trades', '1 day'::interval)")
        conn.execute(
            "CREATE MATERIALIZED VIEW hourly WITH (timescaledb.continuous) AS SELECT "
            "time_bucket('1 hour', ts) AS hour, count(*) FROM trades GROUP BY 1 WITH NO DATA"
        )
        conn.execute("SELECT add_continuous_aggregate_policy('hourly', NULL, NULL, '1 hour')")
        conn.execute("CREATE SCHEMA other; CREATE TABLE other.t (id int)")
        conn.execute("CREATE TYPE mood AS ENUM ('up'); CREATE DOMAIN price AS float8")
        conn.execute("CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql AS 'SELECT a'")
        conn.execute("CREATE SEQUENCE s; CREATE VIEW v AS SELECT 1; CREATE ROLE reader")
        left = dict(conn.execute(tsdbserver.LEFTOVERS_SQL).fetchall())
    assert all(left[what] for what in ("hypertables", "chunks", "jobs", "relations", "roles"))
    tsdbserver.clean(tsdb_db)
    with psycopg.connect(tsdb_db, autocommit=True) as conn:
        assert set(dict(conn.execute(tsdbserver.LEFTOVERS_SQL).fetchall()).values()) == {0}
        assert conn.execute("SELECT to_regtype('mood'), to_regproc('f')").fetchone() == (None, None)
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        _hypertable_with_three_days(conn)
        assert conn.execute("SELECT count(*) FROM show_chunks('trades')").fetchone() == (3,)


# --- the launcher ------------------------------------------------------------------------


def test_start_without_node_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(tsdbserver.TsdbServerError, match="apt-get install nodejs npm"):
        tsdbserver.start(tmp_path / "db")


def test_start_without_npm_packages_says_make_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tsdbserver, "PGLITE_PACKAGE", tmp_path / "missing" / "package.json")
    with pytest.raises(tsdbserver.TsdbServerError, match="make install"):
        tsdbserver.start(tmp_path / "db")


def test_boot_failure_quotes_the_server_log(tmp_path: Path) -> None:
    with pytest.raises(tsdbserver.TsdbServerError, match="license apache is not available"):
        tsdbserver.start(tmp_path / "db", license="apache")
    assert not tsdbserver.status(tmp_path / "db")


def test_cli_status_of_a_stopped_server_exits_3(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scripts.tsdbserver", "status", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stdout) == (3, "stopped\n")


def test_copy_through_the_extended_protocol_is_refused_not_fatal(
    tsdb_db: str, pglite: TsdbServer
) -> None:
    with _raw_client(tsdb_db) as sock:
        parse = _message(b"P", b"\x00COPY t FROM STDIN (FORMAT BINARY)\x00\x00\x00")
        bind = _message(b"B", b"\x00\x00" + b"\x00\x00" * 3)
        execute = _message(b"E", b"\x00\x00\x00\x00\x00")
        sock.sendall(parse + bind + execute + _message(b"S", b""))
        replies = _read_until(sock, b"Z", 1)
    errors_seen = [body for kind, body in replies if kind == b"E"]
    assert len(errors_seen) == 1 and b"C0A000" in errors_seen[0]
    with psycopg.connect(tsdb_db) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
