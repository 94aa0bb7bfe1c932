"""``loader run`` as a process: database outages, SIGTERM, new segments while running."""

from __future__ import annotations

import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from loader.db import RUN_LOCK_KEY
from loader.runner import OWN_LOCK_WAIT_S, own_lock_wait
from loader.schema import init_db
from scripts import pgserver
from tests.loader.conftest import (
    ROOT,
    check_counts_match_table,
    committed_trades,
    db_trades,
    expected_trades,
    loader_cmd,
    run_loader,
    sealed,
)
from tests.loader.helpers import build_wal, trade_frame, write_segment
from tests.timeouts import TIMEOUT_S

SECRET = "sekrit-pw-42"  # trust auth ignores it; it must never be printed


@pytest.fixture
def own_server() -> Iterator[Path]:
    """A cluster of this test's own, to stop and start at will."""
    datadir = Path(tempfile.mkdtemp(prefix="pgrestart-"))
    try:
        pgserver.start(datadir)
        yield datadir
    finally:
        pgserver.destroy(datadir)


def wait_until(predicate: object, what: str, timeout: float = TIMEOUT_S * 3) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():  # type: ignore[operator]
                return
        except psycopg.OperationalError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def start_run(dsn: str, wal_dir: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        loader_cmd("--dsn", dsn, "run", "--wal-dir", str(wal_dir), "--poll-seconds", "0.1", *extra),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_run_survives_a_postgresql_restart_and_loads_everything(
    own_server: Path, wal_dir: Path
) -> None:
    dsn = pgserver.dsn(own_server) + f" password={SECRET}"
    with psycopg.connect(dsn) as conn:
        init_db(conn)
    build_wal(wal_dir)
    child = start_run(dsn, wal_dir, "--batch-trades", "25")
    try:
        wait_until(lambda: committed_trades(dsn) > 0, "first commit")
        pgserver.stop(own_server, "fast")  # terminates the loader's session mid-work
        time.sleep(1.0)
        write_segment(
            wal_dir, 100, [[trade_frame(10**6 + i) for i in range(10)]]
        )  # arrives meanwhile
        assert child.poll() is None, "the loader must wait for the database, not exit"
        pgserver.start(own_server)
        expected = expected_trades(sealed(wal_dir))
        wait_until(lambda: db_trades(dsn) == expected, "everything loaded after the restart")
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=TIMEOUT_S)
    finally:
        child.kill()
    assert child.returncode == 0, stderr
    assert "database unavailable" in stderr
    assert SECRET not in stderr
    check_counts_match_table(dsn)


def test_sigterm_finishes_the_transaction_and_exits_0(db: str, wal_dir: Path) -> None:
    build_wal(wal_dir)
    child = start_run(db, wal_dir, "--batch-trades", "25")
    try:
        wait_until(lambda: committed_trades(db) > 0, "first commit")
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=TIMEOUT_S)
    finally:
        child.kill()
    assert child.returncode == 0, stderr
    assert "SIGTERM received" in stderr and "Traceback" not in stderr
    check_counts_match_table(db)
    assert sum(db_trades(db).values()) == committed_trades(db)


def test_run_picks_up_segments_sealed_while_it_runs(db: str, wal_dir: Path) -> None:
    write_segment(wal_dir, 0, [[trade_frame(1)]])
    child = start_run(db, wal_dir)
    try:
        wait_until(lambda: committed_trades(db) == 1, "first segment")
        write_segment(wal_dir, 1, [[trade_frame(2), trade_frame(3)]])
        wait_until(lambda: committed_trades(db) == 3, "second segment")
        child.send_signal(signal.SIGTERM)
        child.communicate(timeout=TIMEOUT_S)
    finally:
        child.kill()
    assert child.returncode == 0


def test_run_waits_for_a_database_that_is_not_up_yet(own_server: Path, wal_dir: Path) -> None:
    dsn = pgserver.dsn(own_server)
    with psycopg.connect(dsn) as conn:
        init_db(conn)
    pgserver.stop(own_server)
    write_segment(wal_dir, 0, [[trade_frame(1)]])
    child = start_run(dsn, wal_dir)
    try:
        time.sleep(1.5)
        assert child.poll() is None
        pgserver.start(own_server)
        wait_until(lambda: committed_trades(dsn) == 1, "the load after start-up")
        child.send_signal(signal.SIGTERM)
        child.communicate(timeout=TIMEOUT_S)
    finally:
        child.kill()
    assert child.returncode == 0


def test_continuous_run_with_a_corrupt_segment_still_exits_0_on_sigterm(
    db: str, wal_dir: Path
) -> None:
    bad = write_segment(wal_dir, 0, [[trade_frame(1)]])
    bad.write_bytes(b"garbage" + bad.read_bytes())
    write_segment(wal_dir, 1, [[trade_frame(2)]])
    child = start_run(db, wal_dir)
    try:
        wait_until(lambda: committed_trades(db) == 1, "the good segment")
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=TIMEOUT_S)
    finally:
        child.kill()
    assert child.returncode == 0, stderr
    assert "is corrupt" in stderr


def run_lock_holder(dsn: str) -> int | None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND granted",
            (RUN_LOCK_KEY,),
        ).fetchone()
    return row[0] if row else None


def terminate(dsn: str, pid: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))


def test_run_once_gives_up_on_an_unreachable_database_after_max_wait(tmp_path: Path) -> None:
    dsn = f"host=127.0.0.1 port=1 user=u password={SECRET} dbname=x"
    done = run_loader(dsn, "run", "--wal-dir", str(tmp_path), "--once", "--max-wait", "2")
    assert done.returncode == 1
    assert "stayed unavailable for 2 s (--max-wait)" in done.stderr
    assert "Connection refused" in done.stderr or "connection" in done.stderr
    assert SECRET not in done.stderr + done.stdout and "Traceback" not in done.stderr


def test_run_waits_out_its_terminated_session_and_loads_on(db: str, wal_dir: Path) -> None:
    write_segment(wal_dir, 0, [[trade_frame(1)]])
    child = start_run(db, wal_dir)
    try:
        wait_until(lambda: committed_trades(db) == 1, "first segment")
        old = run_lock_holder(db)
        assert old is not None
        terminate(db, old)
        write_segment(wal_dir, 1, [[trade_frame(2)]])
        wait_until(lambda: committed_trades(db) == 2, "the segment after the termination")
        assert run_lock_holder(db) not in (None, old)
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=TIMEOUT_S)
    finally:
        child.kill()
    assert child.returncode == 0, stderr
    assert "database unavailable" in stderr


def test_a_loader_that_lost_its_session_to_another_loader_exits_1(db: str, wal_dir: Path) -> None:
    write_segment(wal_dir, 0, [[trade_frame(1)]])
    first = start_run(db, wal_dir)
    second = None
    try:
        wait_until(lambda: committed_trades(db) == 1, "first segment")
        old = run_lock_holder(db)
        assert old is not None
        terminate(db, old)  # the first loader is idle: it notices at its next query
        second = start_run(db, wal_dir)
        wait_until(lambda: run_lock_holder(db) not in (None, old), "the second loader's lock")
        write_segment(wal_dir, 1, [[trade_frame(2)]])  # the first one needs the database
        _, stderr = first.communicate(timeout=TIMEOUT_S * 2)
        assert first.returncode == 1, stderr
        assert "another loader now holds the database" in stderr
        assert "Traceback" not in stderr
        wait_until(lambda: committed_trades(db) == 2, "the second loader loading on")
        second.send_signal(signal.SIGTERM)
        second.communicate(timeout=TIMEOUT_S)
        assert second.returncode == 0
    finally:
        first.kill()
        if second is not None:
            second.kill()


def test_our_own_previous_backend_is_waited_for_but_no_other_holder() -> None:
    assert own_lock_wait(holder_pid=41, previous_pid=41, waited_s=0.0)
    assert not own_lock_wait(holder_pid=41, previous_pid=41, waited_s=OWN_LOCK_WAIT_S)
    assert not own_lock_wait(holder_pid=42, previous_pid=41, waited_s=0.0)
    assert not own_lock_wait(holder_pid=None, previous_pid=41, waited_s=0.0)
    assert not own_lock_wait(holder_pid=41, previous_pid=None, waited_s=0.0)


def test_a_permanent_database_error_ends_run_with_exit_1_and_marks_nothing(
    db: str, wal_dir: Path
) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN PERFORM pg_sleep(5); RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER slow BEFORE INSERT ON trade_rows FOR EACH ROW EXECUTE FUNCTION slow()"
        )
        conn.execute(f"ALTER DATABASE {conn.info.dbname} SET statement_timeout = '300ms'")
    path = write_segment(wal_dir, 0, [[trade_frame(1)]])
    child = start_run(db, wal_dir)  # a service, not --once: it must still end
    try:
        _, stderr = child.communicate(timeout=TIMEOUT_S * 2)
    finally:
        child.kill()
    assert child.returncode == 1, stderr
    assert "database error: canceling statement due to statement timeout" in stderr
    assert "SQLSTATE 57014" in stderr and "Traceback" not in stderr
    assert "database unavailable" not in stderr
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "SELECT status, offset_bytes, trades FROM wal_segments WHERE name = %s", (path.name,)
        ).fetchone()
    assert row in (None, ("loading", 0, 0))
