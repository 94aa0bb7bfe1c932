"""loader/db.py: errors classified by SQLSTATE; outages waited out, conflicts retried a
bounded number of times, everything else raised at once."""

from __future__ import annotations

import threading
from collections.abc import Callable

import psycopg
import pytest
from psycopg import errors

from loader import db
from loader.errors import DatabaseUnavailableError

OUTAGES = ["08000", "08001", "08003", "08006", "08P01", "57P01", "57P02", "57P03", "53300"]
CONFLICTS = ["40001", "40P01"]
PERMANENT = ["53400", "57014", "42P01", "23505", "42501", "53200", "XX000", "22P02"]


@pytest.mark.parametrize("code", OUTAGES)
def test_connection_and_shutdown_states_are_outages(code: str) -> None:
    assert db.classify(errors.lookup(code)("gone")) is db.Kind.OUTAGE


def test_a_connection_failure_without_sqlstate_is_an_outage() -> None:
    assert db.classify(psycopg.OperationalError("connection refused")) is db.Kind.OUTAGE
    assert db.classify(psycopg.OperationalError("the connection is closed")) is db.Kind.OUTAGE


def test_a_full_disk_on_the_server_is_waited_out_as_its_own_kind() -> None:
    assert db.classify(errors.lookup("53100")("could not extend file")) is db.Kind.DISK_FULL


@pytest.mark.parametrize("code", CONFLICTS)
def test_serialization_failures_and_deadlocks_are_conflicts(code: str) -> None:
    assert db.classify(errors.lookup(code)("conflict")) is db.Kind.CONFLICT


def test_a_row_moved_to_another_partition_is_a_conflict() -> None:
    text = "tuple to be locked was already moved to another partition due to concurrent update"
    assert db.classify(errors.lookup("XX000")(text)) is db.Kind.CONFLICT


@pytest.mark.parametrize("code", PERMANENT)
def test_other_states_are_permanent_even_when_psycopg_calls_them_operational(code: str) -> None:
    assert db.classify(errors.lookup(code)("no")) is db.Kind.PERMANENT


def test_non_database_errors_are_permanent_and_transient_states_are_outages() -> None:
    assert db.classify(ValueError("bug")) is db.Kind.PERMANENT
    assert db.classify(psycopg.InterfaceError("misuse")) is db.Kind.PERMANENT
    assert db.classify(db.Transient("our old session holds the lock")) is db.Kind.OUTAGE


class FakeStop(threading.Event):
    """A stop event whose waits advance a fake clock instead of sleeping."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout or 0.0)
        self.now += timeout or 0.0
        return self.is_set()

    def clock(self) -> float:
        return self.now


def failing(exc: Exception, times: int, result: str = "done") -> Callable[[], str]:
    calls = {"n": 0}

    def work() -> str:
        calls["n"] += 1
        if calls["n"] <= times:
            raise exc
        return result

    return work


def test_retrying_waits_out_an_outage_with_a_capped_backoff() -> None:
    stop = FakeStop()
    work = failing(psycopg.OperationalError("refused"), 12)
    assert db.retrying(work, dsn=None, stop=stop, what="x", clock=stop.clock) == "done"
    assert stop.waits[:3] == [0.5, 1.0, 2.0] and max(stop.waits) == db.RETRY_MAX_S


def test_retrying_gives_up_on_an_outage_after_max_wait_without_the_password() -> None:
    stop = FakeStop()
    dsn = "host=127.0.0.1 port=1 password=hunter2"
    work = failing(psycopg.OperationalError("refused for hunter2"), 10**6)
    with pytest.raises(DatabaseUnavailableError) as caught:
        db.retrying(work, dsn=dsn, stop=stop, what="x", max_wait_s=5, clock=stop.clock)
    assert stop.now == 5 and "--max-wait" in str(caught.value)
    assert "hunter2" not in str(caught.value) and "refused for ***" in str(caught.value)


def test_retrying_retries_a_conflict_a_bounded_number_of_times() -> None:
    stop = FakeStop()
    conflict = errors.lookup("40P01")("deadlock detected")
    ok = failing(conflict, db.CONFLICT_RETRIES - 1)
    assert db.retrying(ok, dsn=None, stop=stop, what="x", clock=stop.clock) == "done"
    with pytest.raises(errors.DeadlockDetected):
        db.retrying(
            failing(conflict, db.CONFLICT_RETRIES), dsn=None, stop=stop, what="x", clock=stop.clock
        )


def test_retrying_raises_a_permanent_error_at_once() -> None:
    stop = FakeStop()
    seen: list[BaseException] = []
    timeout = errors.lookup("57014")("canceling statement due to statement timeout")
    with pytest.raises(errors.QueryCanceled):
        db.retrying(failing(timeout, 1), dsn=None, stop=stop, what="x", on_error=seen.append)
    assert stop.waits == [] and seen == [timeout]


def test_a_real_serialization_failure_is_retried_then_fails(db_dsn_pair: tuple[str, str]) -> None:
    dsn, _ = db_dsn_pair
    attempts = {"n": 0}

    def work() -> None:
        attempts["n"] += 1
        with psycopg.connect(dsn) as mine, psycopg.connect(dsn, autocommit=True) as other:
            mine.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            mine.execute("SELECT * FROM counter").fetchall()  # the snapshot is taken
            other.execute("UPDATE counter SET n = n + 1")
            mine.execute("UPDATE counter SET n = n + 1")  # 40001: concurrent update

    with pytest.raises(errors.SerializationFailure):
        db.retrying(work, dsn=dsn, stop=threading.Event(), what="counting")
    assert attempts["n"] == db.CONFLICT_RETRIES


def test_a_real_terminated_session_is_waited_out(db_dsn_pair: tuple[str, str]) -> None:
    dsn, admin = db_dsn_pair
    conn = psycopg.connect(dsn, autocommit=True)
    pid = conn.info.backend_pid
    with psycopg.connect(admin, autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", (pid,))
    state: dict[str, psycopg.Connection] = {"conn": conn}

    def work() -> int:
        if state["conn"].closed:
            state["conn"] = psycopg.connect(dsn, autocommit=True)
        row = state["conn"].execute("SELECT n FROM counter").fetchone()
        return int(row[0]) if row else -1

    def drop(exc: BaseException) -> None:
        assert db.classify(exc) is db.Kind.OUTAGE, exc
        state["conn"].close()

    assert db.retrying(work, dsn=dsn, stop=threading.Event(), what="x", on_error=drop) == 0
    assert state["conn"].info.backend_pid != pid
    state["conn"].close()


@pytest.fixture
def db_dsn_pair(fresh_db: str) -> tuple[str, str]:
    """A database with a one-row table ``counter``: its DSN, and one to act on it with."""
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE counter (n int)")
        conn.execute("INSERT INTO counter VALUES (0)")
    return fresh_db, fresh_db
