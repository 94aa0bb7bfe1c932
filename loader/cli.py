"""The ``loader`` command: init-db, run and reparse here; status, prunable, book and gaps
in loader/readcli.py.

Every option can also be set by an environment variable ``LOADER_<NAME>``. Exit codes:
0 ok, 1 a runtime error (one message, no traceback), 2 a usage error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from loader import db, readcli, schema, status
from loader.cliopts import (
    BATCH_TRADES,
    BOOKS,
    DSN_EXPLICIT,
    REPARSE_BOOKS,
    SUB_DSN,
    WAL_DIR,
    Interval,
    check_dsn,
    errors,
)
from loader.errors import SegmentNameError
from loader.load import Outcome
from loader.parse import PARSER_VERSION
from loader.runner import DEFAULT_POLL_S, Runner, RunReport, sealed_segment_name
from loader.timescale import Mode
from loader.tracker import UNREADABLE_RETRY_INITIAL_S

log = logging.getLogger("loader")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DEFAULT_MAX_WAIT_S = 30.0  # a cron job fails within a minute instead of hanging


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--dsn",
    envvar="LOADER_DSN",
    show_envvar=True,
    help="PostgreSQL connection string, without a password (any local user sees a command "
    "line): prefer LOADER_DSN in the service's env file (mode 0600), and keep the password "
    "there or in a PGPASSFILE. Without it libpq's PG* variables apply.",
)
@click.option(
    "--log-level",
    envvar="LOADER_LOG_LEVEL",
    show_envvar=True,
    default="info",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
)
@click.pass_context
def main(ctx: click.Context, dsn: str | None, log_level: str) -> None:
    """Load trades from sealed WAL segments into PostgreSQL/TimescaleDB, exactly once."""
    if ctx.get_parameter_source("dsn") is click.core.ParameterSource.COMMANDLINE:
        check_dsn(dsn, on_command_line=True)  # LOADER_DSN: checked once it wins (_set_dsn)
        ctx.meta[DSN_EXPLICIT] = True
    logging.basicConfig(level=log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)
    ctx.obj = dsn


@main.command("init-db")
@SUB_DSN
@click.option(
    "--timescaledb",
    "mode",
    envvar="LOADER_TIMESCALEDB",
    show_envvar=True,
    type=click.Choice([m.value for m in Mode], case_sensitive=False),
    default=Mode.AUTO.value,
    show_default=True,
    help="auto: hypertables when the server has TimescaleDB, plain tables when it has "
    "none; require: fail without it; off: plain tables.",
)
@click.option(
    "--compress-after",
    envvar="LOADER_COMPRESS_AFTER",
    show_envvar=True,
    type=Interval(),
    default=None,
    help="TimescaleDB: compress chunks older than this [default: the policy there is, or "
    "7 days for a new one].",
)
@click.pass_obj
def init_db(dsn: str | None, mode: str, compress_after: timedelta | None) -> None:
    """Create or migrate the schema (idempotent; safe to run concurrently)."""
    with errors(dsn), db.connect(dsn) as conn:
        result = schema.init_db(conn, compress_after, mode=Mode(mode.lower()))
    applied = ", ".join(map(str, result.applied)) or "none (up to date)"
    click.echo(result.note)
    click.echo(
        f"schema version {result.version}; migrations applied: {applied}; "
        f"trades: {result.setup.describe()}"
    )


@main.command()
@SUB_DSN
@WAL_DIR
@click.option(
    "--once", is_flag=True, envvar="LOADER_ONCE", show_envvar=True, help="Stop when caught up."
)
@click.option(
    "--poll-seconds",
    envvar="LOADER_POLL_SECONDS",
    show_envvar=True,
    type=click.FloatRange(min=0.01),
    default=DEFAULT_POLL_S,
    show_default=True,
)
@click.option(
    "--max-wait",
    envvar="LOADER_MAX_WAIT",
    show_envvar=True,
    type=click.FloatRange(min=0),
    default=DEFAULT_MAX_WAIT_S,
    show_default=True,
    metavar="SECONDS",
    help="--once: wait at most this long for an unreachable database, then exit 1 "
    "(a service without --once waits for ever).",
)
@click.option(
    "--unreadable-retry-seconds",
    type=click.FloatRange(min=0.01),
    default=UNREADABLE_RETRY_INITIAL_S,
    hidden=True,  # for tests: first wait before an unreadable segment is read again
)
@BATCH_TRADES
@BOOKS
@click.pass_obj
def run(
    dsn: str | None,
    wal_dir: Path,
    once: bool,
    poll_seconds: float,
    max_wait: float,
    unreadable_retry_seconds: float,
    batch_trades: int,
    books: bool,
) -> None:
    """Load sealed segments in order, continuously or until caught up (--once).

    --once exits 1 while any sealed segment in the WAL directory is corrupt or unreadable
    in the database, found by this run or an earlier one, so a cron job keeps failing
    until an operator has acted.
    """
    with errors(dsn), _stop_on_signals() as stop:
        runner = Runner(
            dsn,
            wal_dir,
            stop=stop,
            batch_trades=batch_trades,
            max_wait_s=max_wait if once else None,
            unreadable_retry_s=unreadable_retry_seconds,
            books=books,
        )
        try:
            report = runner.run(once=once, poll_s=poll_seconds)
        finally:
            runner.close()
    if not once:
        # Logged as found; a daemon exits 0 on SIGTERM.
        corrupt: list[dict[str, Any]] = []
        unreadable: list[dict[str, Any]] = []
    elif report.stopped:
        corrupt, unreadable = _entries(report.corrupt), _entries(report.failed)
    else:
        corrupt, unreadable = report.still_corrupt, report.still_unreadable
    _finish(report, "loaded", corrupt, wal_dir, unreadable)


@main.command()
@SUB_DSN
@WAL_DIR
@click.option(
    "--segment",
    "segments",
    multiple=True,
    metavar="NAME",
    envvar="LOADER_SEGMENT",
    show_envvar=True,
    help="Repeatable (in LOADER_SEGMENT: separated by spaces).",
)
@click.option(
    "--all",
    "all_segments",
    is_flag=True,
    envvar="LOADER_ALL",
    show_envvar=True,
    help="Every segment in the database.",
)
@click.option(
    "--stale",
    is_flag=True,
    envvar="LOADER_STALE",
    show_envvar=True,
    help=f"Segments loaded by a parser older than v{PARSER_VERSION}.",
)
@BATCH_TRADES
@REPARSE_BOOKS
@click.pass_obj
def reparse(
    dsn: str | None,
    wal_dir: Path,
    segments: tuple[str, ...],
    all_segments: bool,
    stale: bool,
    batch_trades: int,
    books: bool,
) -> None:
    """Reload segments with the current parser (delete + load, one transaction each).

    --segment takes sealed segments only (a name, or a path whose file name is used): an
    ``.open`` segment, a name that is no segment or one whose file is not in --wal-dir is
    a usage error (exit 2). This is
    also how a corrupt segment is repaired once a good copy of its file is restored.
    """
    if sum((bool(segments), all_segments, stale)) != 1:
        raise click.UsageError("give exactly one of --segment NAME..., --all, --stale")
    try:
        named = [sealed_segment_name(s) for s in segments]
    except SegmentNameError as exc:
        raise click.BadParameter(str(exc), param_hint="--segment") from None
    # Nothing at all under the name; a name that cannot be read fails alone, below.
    missing = [name for name in named if not os.path.lexists(wal_dir / name)]
    if missing:
        raise click.BadParameter(
            f"no such segment file in {wal_dir}: {', '.join(missing)} (`wal ls {wal_dir}` "
            "lists the segments there; restore a pruned or damaged one from a backup first)",
            param_hint="--segment",
        )
    with errors(dsn), _stop_on_signals() as stop:
        runner = Runner(dsn, wal_dir, stop=stop, batch_trades=batch_trades, books=books)
        try:
            names = named or runner.stale_names(all_segments=all_segments)
            report = _reparse(runner, names)
            if report.loaded and not report.stopped:
                runner.recompress()
        finally:
            runner.close()
    _finish(report, "reparsed", _entries(report.corrupt), wal_dir, _entries(report.failed))


def _reparse(runner: Runner, names: list[str]) -> RunReport:
    if not names:
        click.echo("nothing to reparse", err=True)
        return RunReport()
    if len(names) > 1 and sys.stderr.isatty():
        with click.progressbar(length=len(names), label="reparsing", file=sys.stderr) as bar:
            return runner.reparse(names, lambda _outcome: bar.update(1))
    return runner.reparse(names, _log_outcome)


def _log_outcome(outcome: Outcome) -> None:
    log.info("segment %s %s: %d trades", outcome.name, outcome.status, outcome.trades)


def _finish(
    report: RunReport,
    verb: str,
    corrupt: list[dict[str, Any]],
    wal_dir: Path,
    unreadable: list[dict[str, Any]] | None = None,
) -> None:
    """Print the summary; exit 1 naming the ``corrupt`` and ``unreadable`` segments, if
    any, and the remedy."""
    click.echo(
        f"{verb} {len(report.loaded)} segments, {report.trades} trades"
        + (f"; book rows backfilled for {report.backfilled} segments" if report.backfilled else "")
        + (" (stopped)" if report.stopped else ""),
        err=True,
    )
    problems = []
    if corrupt:
        problems.append(status.describe_corrupt(corrupt, wal_dir))
    if unreadable:
        problems.append(status.describe_unreadable(unreadable, wal_dir))
    if problems:
        raise click.ClickException(" ".join(problems))


def _entries(outcomes: list[Outcome]) -> list[dict[str, Any]]:
    return [{"name": o.name, "offset": o.error_offset, "error": o.error} for o in outcomes]


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGTERM or SIGINT (previous handlers restored afterwards)."""
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        log.info("%s received: finishing the current transaction", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


for _command in (readcli.status_cmd, readcli.prunable_cmd, readcli.book_cmd, readcli.gaps_cmd):
    main.add_command(_command)


if __name__ == "__main__":
    main()
