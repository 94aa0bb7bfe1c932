"""The ``wal`` command: look at and check a WAL directory with no database.

Exit codes: 0 ok, 1 a problem was found or an operation failed, 2 usage.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from wal.errors import CorruptSegmentError, SegmentChangedError, WalError
from wal.naming import SegmentName, list_segments, parse_name
from wal.reader import SegmentReader
from wal.summary import Summary, summarize

T = TypeVar("T")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Inspect and verify polymarket-capture WAL segments."""


def _segments_of(target: Path) -> list[tuple[SegmentName, Path]]:
    if target.is_dir():
        return _listed(target)
    name = parse_name(target.name)
    if name is None:
        raise click.ClickException(
            f"{target} is not a segment name (expected SSSSSSSSSSSS-YYYYMMDDTHHMMSSZ.jsonl.zst)"
        )
    return [(name, target)]


def _listed(directory: Path) -> list[tuple[SegmentName, Path]]:
    """The segments in ``directory``; a note on stderr when there are none (a mistyped
    WAL or backup directory would otherwise look like an empty, intact one)."""
    segments = list_segments(directory)
    if not segments:
        click.echo(f"note: no WAL segments in {directory}", err=True)
    return segments


def _as_it_is_now(name: SegmentName, path: Path, look: Callable[[Path], T]) -> T | None:
    """``look(path)`` for the segment as it is now: an ``.open`` one sealed meanwhile is
    looked at under its sealed name; None when it is gone (pruned) under both names.
    A file that changed while it was read is read once more."""
    candidates = [path, path.with_name(name.sealed_name)] if name.is_open else [path]
    found = None
    for candidate in candidates:
        try:
            try:
                found = look(candidate)
            except SegmentChangedError:
                found = look(candidate)
        except FileNotFoundError:
            if os.path.lexists(candidate):
                raise  # the name is there (a dangling symlink): unreadable, not removed
            continue
        if not name.is_open or candidate.exists():  # still there: not sealed meanwhile
            return found
    return found


def _skipped(path: Path, verb: str) -> None:
    click.echo(f"note: {path.name} was removed while {verb}; skipped", err=True)


@main.command("ls")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per segment.")
@click.option(
    "--deep", is_flag=True, help="Count by decoding every record (slow) instead of the seal."
)
def ls_cmd(directory: Path, as_json: bool, deep: bool) -> None:
    """List segments: sequence order, size, record and frame counts, state.

    Counts come from each sealed segment's seal record (its last zstd frame); a sealed
    segment whose seal cannot be read is shown as damaged."""
    try:
        out = sys.stdout  # written directly: click.echo flushes after every line
        for name, path in _listed(directory):
            try:
                info = _as_it_is_now(name, path, lambda p: summarize(p, deep=deep))
            except SegmentChangedError as exc:
                info = Summary(path.name, "changed", 0, None, None, f"{exc.offset}: {exc.cause}")
            except OSError as exc:
                info = Summary(path.name, "unread", 0, None, None, f"cannot read: {exc}")
            if info is None:
                _skipped(path, "listing")
                continue
            out.write(_ls_line(info, as_json))
        out.flush()
    except BrokenPipeError:  # `wal ls DIR | head`
        sys.stderr.close()


def _ls_line(info: Summary, as_json: bool) -> str:
    if as_json:
        return json.dumps(info.as_dict()) + "\n"
    return (
        f"{info.name}  {info.state:<7} {info.bytes:>12} B "
        f"{_shown(info.records):>9} records {_shown(info.frames):>9} frames"
        + (f"  ERROR: {info.error}" if info.error else "")
        + "\n"
    )


def _shown(count: int | None) -> str:
    return "?" if count is None else str(count)


@main.command("cat")
@click.argument("segment", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--type", "types", multiple=True, help="Only records of this type (repeatable).")
@click.option(
    "--from-offset",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Start at this frame's byte offset (see --offsets).",
)
@click.option("--offsets", is_flag=True, help="Prefix each line with its frame's byte offset.")
def cat_cmd(segment: Path, types: tuple[str, ...], from_offset: int, offsets: bool) -> None:
    """Print the records of SEGMENT as JSON lines."""
    wanted = set(types)
    out = sys.stdout
    try:
        for batch in SegmentReader(segment).batches(from_offset):
            for record, line in zip(batch.records(), batch.lines, strict=True):
                if wanted and record["type"] not in wanted:
                    continue
                prefix = f"{batch.offset}\t" if offsets else ""
                out.write(prefix + line.decode("utf-8") + "\n")
    except BrokenPipeError:  # `wal cat X | head`
        sys.stderr.close()
    except (WalError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


@main.command("verify")
@click.argument("target", type=click.Path(exists=True, path_type=Path))
def verify_cmd(target: Path) -> None:
    """Check that every sealed segment in TARGET (a directory or one segment) is intact.

    Open segments are checked up to their torn tail, which is not an error."""
    problems = 0
    checked = 0
    for name, path in _segments_of(target):
        try:
            problem = _as_it_is_now(name, path, _verify_one)
        except SegmentChangedError as exc:
            problem = f"CHANGED {exc}"
        except OSError as exc:
            problem = f"UNREADABLE {path}: {exc}"
        if problem is None:
            _skipped(path, "verifying")
        elif problem:
            problems += 1
            click.echo(problem)
        else:
            checked += 1
    click.echo(f"{checked} segments intact, {problems} corrupt")
    if problems:
        sys.exit(1)


def _verify_one(path: Path) -> str:
    """ "" when the segment is intact, else the line that reports it."""
    try:
        for batch in SegmentReader(path).batches():
            batch.records()
    except CorruptSegmentError as exc:
        return f"CORRUPT {exc.path} at byte offset {exc.offset}: {exc.cause}"
    return ""


if __name__ == "__main__":
    main()
