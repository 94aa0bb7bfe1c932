"""loader/timescale.py: every server setup x --timescaledb mode gets its outcome (pure)."""

from __future__ import annotations

import psycopg
import pytest

from loader.errors import TimescaleSetupError
from loader.timescale import Edition, Mode, ServerFacts, decide, inspect
from tests.loader.conftest import server_has_timescaledb

TSL = ServerFacts(True, None, True, True, Edition.TIMESCALE, "2.23.0")
APACHE = ServerFacts(True, None, True, True, Edition.APACHE, "2.19.3")
ABSENT = ServerFacts(False, None, False, True)
NOT_PRELOADED = ServerFacts(True, None, False, True, Edition.UNKNOWN, "2.23.0")
NO_PERMISSION = ServerFacts(True, None, True, False, Edition.TIMESCALE, "2.23.0")


@pytest.mark.parametrize("mode", [Mode.AUTO, Mode.REQUIRE])
def test_the_timescale_license_build_gets_hypertables_and_compression(mode: Mode) -> None:
    plan = decide(TSL, mode)
    assert plan.timescaledb and plan.compression


@pytest.mark.parametrize("mode", [Mode.AUTO, Mode.REQUIRE])
def test_the_apache_build_gets_hypertables_and_says_what_no_compression_costs(
    mode: Mode,
) -> None:
    plan = decide(APACHE, mode)
    assert plan.timescaledb and not plan.compression
    assert "no compression" in plan.note and "disk" in plan.note


def test_no_timescaledb_gives_plain_tables_in_auto_and_an_error_with_require() -> None:
    plan = decide(ABSENT, Mode.AUTO)
    assert not plan.timescaledb and "not installed" in plan.note
    with pytest.raises(TimescaleSetupError, match="not installed on this server"):
        decide(ABSENT, Mode.REQUIRE)


@pytest.mark.parametrize("mode", [Mode.AUTO, Mode.REQUIRE])
def test_not_preloaded_fails_with_the_line_to_add_the_restart_and_the_way_out(
    mode: Mode,
) -> None:
    with pytest.raises(TimescaleSetupError) as err:
        decide(NOT_PRELOADED, mode)
    text = str(err.value)
    assert "shared_preload_libraries = 'timescaledb'" in text
    assert "restart" in text and "--timescaledb off" in text


@pytest.mark.parametrize("mode", [Mode.AUTO, Mode.REQUIRE])
def test_a_role_that_may_not_create_the_extension_is_told_the_fix(mode: Mode) -> None:
    with pytest.raises(TimescaleSetupError) as err:
        decide(NO_PERMISSION, mode)
    text = str(err.value)
    assert "CREATE EXTENSION timescaledb" in text and "superuser" in text
    assert "--timescaledb off" in text


def test_an_extension_already_created_needs_no_permission() -> None:
    created = ServerFacts(True, "2.23.0", True, False, Edition.TIMESCALE, "2.23.0")
    assert decide(created, Mode.AUTO).timescaledb


@pytest.mark.parametrize("facts", [TSL, APACHE, ABSENT, NOT_PRELOADED, NO_PERMISSION])
def test_off_always_gives_plain_tables(facts: ServerFacts) -> None:
    plan = decide(facts, Mode.OFF)
    assert not plan.timescaledb and not plan.compression


def test_inspect_reads_the_test_server_as_it_is(fresh_db: str) -> None:
    timescale = server_has_timescaledb(fresh_db)  # preloaded by the throwaway cluster if so
    with psycopg.connect(fresh_db) as conn:
        facts = inspect(conn)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    if timescale:
        assert facts.available and facts.preloaded and facts.may_create
    else:
        assert facts == ServerFacts(False, None, False, True)


def test_inspect_as_a_role_without_privileges(fresh_db: str) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS pmc_reader")
        conn.execute("CREATE ROLE pmc_reader LOGIN")
        try:
            conn.execute("SET ROLE pmc_reader")
            facts = inspect(conn)
        finally:
            conn.execute("RESET ROLE")
            conn.execute("DROP ROLE pmc_reader")
    timescale = server_has_timescaledb(fresh_db)
    assert facts.preloaded is timescale and facts.available is timescale
