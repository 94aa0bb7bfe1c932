"""The ``loader`` commands that only read: status, prunable, book, gaps."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from loader import bookview, carry, schema, status
from loader.cliopts import SUB_DSN, WAL_DIR, Interval, schema_connection


@click.command("status")
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
    with schema_connection(dsn) as conn:
        report = status.collect(conn, wal_dir)
        report.database = schema.setup_summary(conn)
        now = datetime.now(UTC)
        report.gaps_24h = carry.summary(conn, now - timedelta(days=1), now)
    click.echo(
        json.dumps(report.to_dict(), sort_keys=True) if as_json else status.render(report, wal_dir)
    )


@click.command("prunable")
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
    with schema_connection(dsn) as conn:
        paths = status.prunable(conn, wal_dir, older_than.total_seconds(), backup=backup)
    for path in paths:
        click.echo(str(path))


@click.command("book")
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
    except ValueError as exc:
        raise click.BadParameter(
            f"{at!r} is not an ISO 8601 time or epoch ms ({exc})", param_hint="--at"
        ) from None
    with schema_connection(dsn) as conn:
        book = bookview.book_at(conn, token, moment)
    if as_json:
        click.echo(json.dumps(book.to_dict(depth), sort_keys=True))
    else:
        click.echo(bookview.render(book, depth))


@click.command("gaps")
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
    with schema_connection(dsn) as conn:
        found = carry.gaps_since(conn, datetime.now(UTC) - since, token)
    click.echo(json.dumps(carry.to_json(found)) if as_json else carry.render(found))
