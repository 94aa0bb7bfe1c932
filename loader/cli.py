"""The ``loader`` command: init-db, run, reparse, status.

Every option can also be set by an environment variable ``LOADER_<NAME>``. Exit codes:
0 ok, 1 a runtime error (one message, no traceback), 2 a usage error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import signal
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import psycopg
from psycopg import conninfo

from loader import bookview, carry, db, schema, status
from loader.errors import LoaderError, SegmentNameError
from loader.load import DEFAULT_BATCH_TRADES, Outcome
from loader.parse import PARSER_VERSION
from loader.runner import DEFAULT_POLL_S, Runner, RunReport, sealed_segment_name
from loader.timescale import Mode
from loader.tracker import UNREADABLE_RETRY_INITIAL_S

log = logging.getLogger("loader")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DEFAULT_MAX_WAIT_S = 30.0  # a cron job fails within a minute instead of hanging
_INTERVAL_RE = re.compile(
    r"(\d+)\s*(w|weeks?|d|days?|h|hours?|m|min|minutes?|s|sec|seconds?)", re.IGNORECASE
)
_INTERVAL_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}

WAL_DIR = click.option(
    "--wal-dir",
    envvar="LOADER_WAL_DIR",
    show_envvar=True,
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The WAL directory (read only).",
)


BATCH_TRADES = click.option(
    "--batch-trades",
    envvar="LOADER_BATCH_TRADES",
    show_envvar=True,
    type=click.IntRange(min=1),
    default=DEFAULT_BATCH_TRADES,
    show_default=True,
    help="Trades per transaction.",
)


BOOKS = click.option(
    "--books/--no-books",
    envvar="LOADER_BOOKS",
    show_envvar=True,
    default=False,
    show_default=True,
    help="Also load the order-book tables (book_snapshots, price_changes, best_bid_ask, "
    "tick_size_changes); switched on later, it backfills segments already loaded.",
)


class Interval(click.ParamType):
    """A duration such as ``7 days``, ``7d``, ``12h``, ``30m``, ``2w`` or ``90s``."""

    name = "interval"

    def convert(self, value: Any, param: Any, ctx: Any) -> timedelta:
        if isinstance(value, timedelta):
            return value
        match = _INTERVAL_RE.fullmatch(str(value).strip())
        if match is None:
            self.fail(
                f"{value!r} is not a duration: a whole number and a unit, w (weeks), d (days), "
                "h (hours), m (minutes) or s (seconds), e.g. '7 days', '12h', '30m'",
                param,
                ctx,
            )
        number, unit = int(match.group(1)), match.group(2).lower()
        return timedelta(**{_INTERVAL_UNITS[unit[0]]: number})


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
        _check_dsn(dsn, on_command_line=True)  # LOADER_DSN: checked once it wins (_set_dsn)
        ctx.meta[_DSN_EXPLICIT] = True
    logging.basicConfig(level=log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)
    ctx.obj = dsn


_DSN_EXPLICIT = "loader.dsn_on_command_line"  # ctx.meta key: the group got --dsn


def _check_dsn(dsn: str | None, *, on_command_line: bool = False) -> None:
    if dsn:
        try:
            params = conninfo.conninfo_to_dict(dsn)
        except psycopg.ProgrammingError:
            raise click.BadParameter(
                "not a connection string (key=value pairs or a postgresql:// URI)",
                param_hint="--dsn" if on_command_line else "--dsn / LOADER_DSN",
            ) from None
        if on_command_line and params.get("password"):
            click.echo(
                "warning: the --dsn on this command line holds a password, which any local "
                "user can read (ps); put the DSN in LOADER_DSN (the service's env file) or "
                "the password in a PGPASSFILE",
                err=True,
            )


def _set_dsn(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """``--dsn`` after the command. Precedence: ``loader CMD --dsn`` over ``loader --dsn
    CMD`` over LOADER_DSN. A value from the environment never overrides an explicit group
    ``--dsn``, and is checked only when it is the one used."""
    if not value:
        return
    explicit = (
        ctx.get_parameter_source(param.name or "dsn") is click.core.ParameterSource.COMMANDLINE
    )
    if explicit or not ctx.meta.get(_DSN_EXPLICIT):
        _check_dsn(value, on_command_line=explicit)
        ctx.obj = value


# `loader run --dsn X` works as well as `loader --dsn X run`.
SUB_DSN = click.option(
    "--dsn",
    envvar="LOADER_DSN",
    show_envvar=True,
    expose_value=False,
    callback=_set_dsn,
    help="PostgreSQL connection string (also accepted before the command); prefer "
    "LOADER_DSN and a PGPASSFILE: a password on a command line is visible in `ps`.",
)


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
    with _errors(dsn), db.connect(dsn) as conn:
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
    with _errors(dsn), _stop_on_signals() as stop:
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
@BOOKS
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
    ``.open`` segment or a name that is no segment is a usage error (exit 2). This is
    also how a corrupt segment is repaired once a good copy of its file is restored.
    """
    if sum((bool(segments), all_segments, stale)) != 1:
        raise click.UsageError("give exactly one of --segment NAME..., --all, --stale")
    try:
        named = [sealed_segment_name(s) for s in segments]
    except SegmentNameError as exc:
        raise click.BadParameter(str(exc), param_hint="--segment") from None
    with _errors(dsn), _stop_on_signals() as stop:
        runner = Runner(dsn, wal_dir, stop=stop, batch_trades=batch_trades, books=books)
        try:
            names = named or runner.stale_names(all_segments=all_segments)
            report = _reparse(runner, names)
            if report.loaded and not report.stopped:
                runner.recompress()
        finally:
            runner.close()
    _finish(report, "reparsed", _entries(report.corrupt), wal_dir, _entries(report.failed))


@main.command("status")
@SUB_DSN
@WAL_DIR
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    envvar="LOADER_JSON",
    show_envvar=True,
    help="One JSON object.",
)
@click.pass_obj
def status_cmd(dsn: str | None, wal_dir: Path, as_json: bool) -> None:
    """Segments by status, backlog, totals, corrupt segments, parser version."""
    with _errors(dsn), db.connect(dsn) as conn:
        db.require_schema(conn)
        report = status.collect(conn, wal_dir)
        report.database = schema.setup_summary(conn)
        now = datetime.now(UTC)
        report.gaps_24h = carry.summary(conn, now - timedelta(days=1), now)
    click.echo(
        json.dumps(report.to_dict(), sort_keys=True) if as_json else status.render(report, wal_dir)
    )


@main.command("prunable")
@SUB_DSN
@WAL_DIR
@click.option(
    "--older-than",
    envvar="LOADER_OLDER_THAN",
    show_envvar=True,
    type=Interval(),
    default="7 days",
    show_default=True,
    help="Only segments opened longer ago than this.",
)
@click.option(
    "--backup",
    envvar="LOADER_BACKUP",
    show_envvar=True,
    metavar="DIR",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Only segments whose copy DIR/NAME exists and is byte-identical.",
)
@click.pass_obj
def prunable_cmd(
    dsn: str | None, wal_dir: Path, older_than: timedelta, backup: Path | None
) -> None:
    """Print sealed segments that are loaded by the current parser and older than
    --older-than, one path per line: what may be deleted once backed up. Deletes nothing.

    With --backup DIR, a segment is listed only if DIR holds a byte-identical copy under
    the same name (compared in full), so a failed or partial backup never leads to
    deleting the only copy. DIR must not be the WAL directory.
    """
    if backup is not None and backup.resolve() == wal_dir.resolve():
        raise click.BadParameter("is the WAL directory itself, not a backup", param_hint="--backup")
    with _errors(dsn), db.connect(dsn) as conn:
        db.require_schema(conn)
        paths = status.prunable(conn, wal_dir, older_than.total_seconds(), backup=backup)
    for path in paths:
        click.echo(str(path))


@main.command("book")
@SUB_DSN
@click.argument("token")
@click.option("--at", "at", required=True, help="ISO 8601 time (UTC if no offset) or epoch ms.")
@click.option("--depth", type=click.IntRange(min=1), help="Levels per side (default: all).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.pass_obj
def book_cmd(dsn: str | None, token: str, at: str, depth: int | None, as_json: bool) -> None:
    """The order book of TOKEN at a moment: the last snapshot at or before --at with every
    price change after it applied (needs book tables, `loader run --books`)."""
    try:
        moment = bookview.parse_time(at)
    except ValueError:
        raise click.BadParameter(
            f"{at!r} is not an ISO 8601 time or epoch ms", param_hint="--at"
        ) from None
    with _errors(dsn), db.connect(dsn) as conn:
        db.require_schema(conn)
        book = bookview.book_at(conn, token, moment)
    if as_json:
        click.echo(json.dumps(book.to_dict(depth), sort_keys=True))
    else:
        click.echo(bookview.render(book, depth))


@main.command("gaps")
@SUB_DSN
@click.option(
    "--since",
    envvar="LOADER_SINCE",
    show_envvar=True,
    type=Interval(),
    default="1d",
    show_default=True,
    help="Gaps that ended within this long ago, or are still open.",
)
@click.option("--token", metavar="ID", help="Only gaps of this asset (token id).")
@click.option("--json", "as_json", is_flag=True, help="One JSON array.")
@click.pass_obj
def gaps_cmd(dsn: str | None, since: timedelta, token: str | None, as_json: bool) -> None:
    """Spans in which no connection carried some assets (oldest first)."""
    with _errors(dsn), db.connect(dsn) as conn:
        db.require_schema(conn)
        found = carry.gaps_since(conn, datetime.now(UTC) - since, token)
    click.echo(json.dumps(carry.to_json(found)) if as_json else carry.render(found))


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


@contextlib.contextmanager
def _errors(dsn: str | None) -> Iterator[None]:
    """Turn expected failures into one-line ClickExceptions (exit 1)."""
    try:
        yield
    except LoaderError as exc:
        raise click.ClickException(str(exc)) from None
    except psycopg.Error as exc:
        kind = db.classify(exc)
        if kind in (db.Kind.OUTAGE, db.Kind.DISK_FULL):
            what = f"cannot use the database {db.redact(dsn)}"
        elif kind is db.Kind.CONFLICT:
            what = f"database conflict, still there after {db.CONFLICT_RETRIES} tries"
        else:
            what = "database error"
        raise click.ClickException(f"{what}: {db.describe(exc, dsn)}") from None
    except OSError as exc:
        raise click.ClickException(f"{exc.strerror or exc}: {exc.filename}") from None


if __name__ == "__main__":
    main()
