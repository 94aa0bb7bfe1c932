"""What the ``loader`` commands share: their common options, the duration type, the
``--dsn`` rules (no password on a command line) and the one-line error handler."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
import psycopg
from psycopg import conninfo

from loader import db
from loader.errors import LoaderError
from loader.load import DEFAULT_BATCH_TRADES

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


def _books_option(help_text: str) -> Any:
    return click.option(
        "--books/--no-books",
        envvar="LOADER_BOOKS",
        show_envvar=True,
        default=False,
        show_default=True,
        help=help_text,
    )


BOOKS = _books_option(
    "Also load the order-book tables (book_snapshots, price_changes, best_bid_ask, "
    "tick_size_changes); switched on later, it backfills segments already loaded."
)
REPARSE_BOOKS = _books_option(
    "Also rebuild each segment's order-book rows (deleted and loaded again with its "
    "trades); without it they are left as they are."
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


DSN_EXPLICIT = "loader.dsn_on_command_line"  # ctx.meta key: the group got --dsn


def check_dsn(dsn: str | None, *, on_command_line: bool = False) -> None:
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
    if explicit or not ctx.meta.get(DSN_EXPLICIT):
        check_dsn(value, on_command_line=explicit)
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


@contextlib.contextmanager
def schema_connection(dsn: str | None) -> Iterator[psycopg.Connection]:
    """A connection to a database whose schema is current; failures as one-line errors."""
    with errors(dsn), db.connect(dsn) as conn:
        db.require_schema(conn)
        yield conn


@contextlib.contextmanager
def errors(dsn: str | None) -> Iterator[None]:
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
