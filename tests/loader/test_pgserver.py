"""scripts/pgserver.py: the throwaway cluster used by tests, benchmarks and the demo."""

from __future__ import annotations

import tempfile
from pathlib import Path

import psycopg
import pytest

from scripts import pgserver


def test_start_stop_restart_and_status() -> None:
    datadir = Path(tempfile.mkdtemp(prefix="pgserver-test-"))
    try:
        dsn = pgserver.start(datadir)
        assert pgserver.status(datadir)
        assert pgserver.start(datadir) == dsn  # already running: same DSN
        with psycopg.connect(dsn) as conn:
            conn.execute("CREATE TABLE kept (x int)")
            conn.commit()
        assert pgserver.restart(datadir) == dsn
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT count(*) FROM kept").fetchone() == (0,)
        pgserver.stop(datadir)
        assert not pgserver.status(datadir)
        assert pgserver.main(["status", str(datadir)]) == 3
    finally:
        pgserver.destroy(datadir)
    assert not datadir.exists()


def test_missing_binaries_fail_with_install_instructions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pgserver.shutil, "which", lambda _name: None)
    monkeypatch.setattr(pgserver.glob, "glob", lambda _pattern: [])
    with pytest.raises(pgserver.PgServerError, match="apt-get install postgresql"):
        pgserver.find_bindir()


def test_cli_usage() -> None:
    assert pgserver.main(["bogus"]) == 2
