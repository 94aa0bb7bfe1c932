"""The ``wal`` command: look at and check a WAL directory with no database.

Exit codes: 0 ok, 1 a problem was found or an operation failed, 2 usage.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from wal.errors import CorruptSegmentError, WalError
from wal.naming import OPEN_SUFFIX, list_segments, parse_name
from wal.reader import SegmentReader


@click.group()
def main() -> None:
    """Inspect and verify polymarket-capture WAL segments."""


def _segments_of(target: Path) -> list[Path]:
    if target.is_dir():
        return [path for _, path in list_segments(target)]
    if parse_name(target.name) is None:
        raise click.ClickException(
            f"{target} is not a segment name (expected SSSSSSSSSSSS-YYYYMMDDTHHMMSSZ.jsonl.zst)"
        )
    return [target]


@main.command("ls")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per segment.")
def ls_cmd(directory: Path, as_json: bool) -> None:
    """List segments: sequence order, size, record and frame counts, state."""
    for _, path in list_segments(directory):
        info = _summary(path)
        if as_json:
            click.echo(json.dumps(info))
        else:
            click.echo(
                f"{info['name']}  {info['state']:<7} {info['bytes']:>12} B "
                f"{info['records']:>9} records {info['frames']:>9} frames"
                + (f"  ERROR: {info['error']}" if info["error"] else "")
            )


def _summary(path: Path) -> dict[str, object]:
    is_open = path.name.endswith(OPEN_SUFFIX)
    records = frames = 0
    error = None
    reader = SegmentReader(path)
    try:
        for batch in reader.batches():
            for record in batch.records():
                records += 1
                frames += record["type"] == "frame"
    except CorruptSegmentError as exc:
        error = f"byte offset {exc.offset}: {exc.cause}"
    return {
        "name": path.name,
        "state": "open" if is_open else "sealed",
        "bytes": path.stat().st_size,
        "records": records,
        "frames": frames,
        "error": error,
    }


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
    except WalError as exc:
        raise click.ClickException(str(exc)) from None


@main.command("verify")
@click.argument("target", type=click.Path(exists=True, path_type=Path))
def verify_cmd(target: Path) -> None:
    """Check that every sealed segment in TARGET (a directory or one segment) is intact.

    Open segments are checked up to their torn tail, which is not an error."""
    problems = 0
    checked = 0
    for path in _segments_of(target):
        reader = SegmentReader(path)
        try:
            for batch in reader.batches():
                batch.records()
        except CorruptSegmentError as exc:
            problems += 1
            click.echo(f"CORRUPT {exc.path} at byte offset {exc.offset}: {exc.cause}")
            continue
        checked += 1
    click.echo(f"{checked} segments intact, {problems} corrupt")
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
