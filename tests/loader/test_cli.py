"""loader/cli.py: exit codes, env-var options, no tracebacks, no passwords."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from click.testing import CliRunner

from loader.cli import main
from tests.loader.conftest import ROOT, db_trades, loader_cmd, run_loader
from tests.loader.helpers import trade_frame, write_segment


def test_options_come_from_loader_env_vars(db: str, wal_dir: Path) -> None:
    write_segment(wal_dir, 0, [[trade_frame(1)]])
    result = CliRunner().invoke(
        main, ["run"], env={"LOADER_DSN": db, "LOADER_WAL_DIR": str(wal_dir), "LOADER_ONCE": "1"}
    )
    assert result.exit_code == 0, result.output
    assert sum(db_trades(db).values()) == 1
    status = CliRunner().invoke(
        main, ["status", "--json"], env={"LOADER_DSN": db, "LOADER_WAL_DIR": str(wal_dir)}
    )
    assert json.loads(status.stdout)["trades"] == 1


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["run"]).exit_code == 2  # no --wal-dir
    assert runner.invoke(main, ["run", "--wal-dir", str(tmp_path / "missing")]).exit_code == 2
    assert runner.invoke(main, ["init-db", "--compress-after", "soon"]).exit_code == 2
    assert (
        runner.invoke(main, ["--dsn", "host=x =y", "status", "--wal-dir", str(tmp_path)]).exit_code
        == 2
    )
    assert runner.invoke(main, ["nonsense"]).exit_code == 2


def test_unreachable_database_exits_1_without_password_or_traceback(tmp_path: Path) -> None:
    dsn = "host=127.0.0.1 port=1 user=u password=hunter2 dbname=x connect_timeout=2"
    done = run_loader(dsn, "status", "--wal-dir", str(tmp_path))
    assert done.returncode == 1
    assert "cannot use the database" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout and "Traceback" not in done.stderr
    assert "holds a password, which any local user can read" in done.stderr
    quiet = subprocess.run(  # the same DSN from the environment: no warning
        loader_cmd("status", "--wal-dir", str(tmp_path)),
        capture_output=True,
        text=True,
        env={**os.environ, "LOADER_DSN": dsn},
        cwd=ROOT,
        check=False,
    )
    assert quiet.returncode == 1 and "cannot use the database" in quiet.stderr
    assert "holds a password" not in quiet.stderr and "hunter2" not in quiet.stderr


def test_run_once_exits_1_after_loading_around_a_corrupt_segment(db: str, wal_dir: Path) -> None:
    write_segment(wal_dir, 0, [[trade_frame(1)]])
    bad = write_segment(wal_dir, 1, [[trade_frame(2)]])
    bad.write_bytes(b"garbage" + bad.read_bytes())
    write_segment(wal_dir, 2, [[trade_frame(3)]])
    done = run_loader(db, "run", "--wal-dir", str(wal_dir), "--once")
    assert done.returncode == 1
    assert "1 corrupt segment(s)" in done.stderr and bad.name in done.stderr
    assert "Traceback" not in done.stderr
    assert sum(db_trades(db).values()) == 2


def test_a_second_run_on_the_same_database_exits_1(db: str, wal_dir: Path) -> None:
    import psycopg

    from loader.db import RUN_LOCK_KEY

    with psycopg.connect(db, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (RUN_LOCK_KEY,))
        done = run_loader(db, "run", "--wal-dir", str(wal_dir), "--once")
    assert done.returncode == 1 and "only one may run per database" in done.stderr


def test_help_shows_env_vars() -> None:
    out = CliRunner().invoke(main, ["run", "--help"]).output
    assert "LOADER_WAL_DIR" in out and "LOADER_POLL_SECONDS" in out


def test_dsn_is_accepted_after_the_command_too(db: str, wal_dir: Path) -> None:
    write_segment(wal_dir, 0, [[trade_frame(1)]])
    runner = CliRunner()
    result = runner.invoke(main, ["run", "--dsn", db, "--wal-dir", str(wal_dir), "--once"])
    assert result.exit_code == 0, result.output
    status = runner.invoke(main, ["status", "--dsn", db, "--wal-dir", str(wal_dir), "--json"])
    assert json.loads(status.stdout)["trades"] == 1
    bad = runner.invoke(main, ["status", "--dsn", "host=x =y", "--wal-dir", str(wal_dir)])
    assert bad.exit_code == 2


def _env(db: str, wal_dir: Path, **extra: str) -> dict[str, str]:
    return {"LOADER_DSN": db, "LOADER_WAL_DIR": str(wal_dir), **extra}


def test_reparse_selection_comes_from_env_vars(db: str, wal_dir: Path) -> None:
    paths = [write_segment(wal_dir, seq, [[trade_frame(seq)]]) for seq in range(3)]
    runner = CliRunner()
    assert runner.invoke(main, ["run"], env=_env(db, wal_dir, LOADER_ONCE="1")).exit_code == 0
    names = f"{paths[0].name} {paths[2].name}"
    by_segment = runner.invoke(main, ["reparse"], env=_env(db, wal_dir, LOADER_SEGMENT=names))
    assert by_segment.exit_code == 0, by_segment.output
    assert "reparsed 2 segments, 2 trades" in by_segment.stderr
    every = runner.invoke(main, ["reparse"], env=_env(db, wal_dir, LOADER_ALL="1"))
    assert every.exit_code == 0, every.output
    assert "reparsed 3 segments, 3 trades" in every.stderr
    stale = runner.invoke(main, ["reparse"], env=_env(db, wal_dir, LOADER_STALE="true"))
    assert stale.exit_code == 0 and "nothing to reparse" in stale.stderr
    # An env selection counts as given: combined with another one it is a usage error.
    both = runner.invoke(main, ["reparse", "--stale"], env=_env(db, wal_dir, LOADER_ALL="1"))
    assert both.exit_code == 2 and "exactly one of" in both.stderr
    assert sum(db_trades(db).values()) == 3


def test_status_json_and_prunable_older_than_come_from_env_vars(db: str, wal_dir: Path) -> None:
    path = write_segment(wal_dir, 0, [[trade_frame(1)]])  # opened 2026-08-14
    runner = CliRunner()
    assert runner.invoke(main, ["run"], env=_env(db, wal_dir, LOADER_ONCE="1")).exit_code == 0
    status = runner.invoke(main, ["status"], env=_env(db, wal_dir, LOADER_JSON="1"))
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["trades"] == 1
    old = runner.invoke(main, ["prunable"], env=_env(db, wal_dir, LOADER_OLDER_THAN="1h"))
    assert old.exit_code == 0 and old.stdout.split() == [str(path)]
    young = runner.invoke(main, ["prunable"], env=_env(db, wal_dir, LOADER_OLDER_THAN="36500d"))
    assert young.exit_code == 0 and young.stdout == ""
    bad = runner.invoke(main, ["prunable"], env=_env(db, wal_dir, LOADER_OLDER_THAN="soon"))
    assert bad.exit_code == 2 and "LOADER_OLDER_THAN" in bad.stderr


def test_dsn_precedence_command_line_then_group_then_env(db: str, wal_dir: Path) -> None:
    write_segment(wal_dir, 0, [[trade_frame(1)]])
    unreachable = "host=127.0.0.1 port=1 dbname=x connect_timeout=2"
    runner = CliRunner()
    args = ["status", "--wal-dir", str(wal_dir), "--json"]
    # LOADER_DSN alone reaches every subcommand (read by the group and by its --dsn).
    assert runner.invoke(main, args, env={"LOADER_DSN": db}).exit_code == 0
    # An explicit --dsn, before or after the command, wins over LOADER_DSN.
    for argv in (["--dsn", db, *args], [*args, "--dsn", db]):
        result = runner.invoke(main, argv, env={"LOADER_DSN": unreachable})
        assert result.exit_code == 0, (argv, result.output)
    # After the command wins over before it.
    after = runner.invoke(main, ["--dsn", unreachable, *args, "--dsn", db])
    assert after.exit_code == 0, after.output
    # A malformed LOADER_DSN is one usage error, reported once.
    bad = runner.invoke(main, args, env={"LOADER_DSN": "host=x =y"})
    assert bad.exit_code == 2 and bad.stderr.count("not a connection string") == 1


def test_help_shows_every_env_var() -> None:
    runner = CliRunner()
    wanted = {
        "init-db": ["LOADER_DSN", "LOADER_COMPRESS_AFTER"],
        "run": ["LOADER_DSN", "LOADER_ONCE", "LOADER_BATCH_TRADES"],
        "reparse": ["LOADER_DSN", "LOADER_SEGMENT", "LOADER_ALL", "LOADER_STALE"],
        "status": ["LOADER_DSN", "LOADER_JSON"],
        "prunable": ["LOADER_DSN", "LOADER_OLDER_THAN", "LOADER_BACKUP"],
    }
    for command, names in wanted.items():
        out = runner.invoke(main, [command, "--help"]).output
        assert all(name in out for name in names), (command, out)


def test_a_bad_loader_dsn_does_not_matter_when_dsn_is_given(db: str, wal_dir: Path) -> None:
    runner = CliRunner()
    env = {"LOADER_DSN": "host=x =y"}
    after = runner.invoke(main, ["status", "--wal-dir", str(wal_dir), "--dsn", db], env=env)
    assert after.exit_code == 0, after.output
    before = runner.invoke(main, ["--dsn", db, "status", "--wal-dir", str(wal_dir)], env=env)
    assert before.exit_code == 0, before.output
    alone = runner.invoke(main, ["status", "--wal-dir", str(wal_dir)], env=env)
    assert alone.exit_code == 2 and "not a connection string" in alone.output


def test_help_and_readme_never_put_a_password_on_a_command_line() -> None:
    from tests.loader.conftest import ROOT

    helps = [CliRunner().invoke(main, [*cmd, "--help"]).output for cmd in ([], ["run"])]
    assert all("LOADER_DSN" in text and "PGPASSFILE" in text for text in helps)
    readme = (ROOT / "README.md").read_text()
    env_example = (ROOT / "deploy" / "loader.env.example").read_text()
    assert "PGPASSFILE" in readme and "PGPASSFILE=" in env_example
    # `--dsn` followed by a URI with user:password@ or by a password= key.
    on_command_line = re.compile(
        r"--dsn[ =]+['\"]?(\w+://[^\s'\"@/]*:[^\s'\"@/]+@|[^'\"]*password=)"
    )
    sh_blocks = "\n".join(re.findall(r"```sh\n(.*?)```", readme, re.S))
    for text in (*helps, sh_blocks):
        assert not on_command_line.search(text), on_command_line.search(text)
    assert on_command_line.search("loader --dsn 'postgresql://user:pw@host/db' run")
