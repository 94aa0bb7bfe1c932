"""Archive benchmark: what costs grow with the WAL's history, each against a baseline
measured in the same run.

- ``wal_ls``: a real ``wal ls`` process over many small sealed segments (counts from the
  seal records), against ``wal ls --deep`` (decode every record, what ``wal ls`` did
  before) over the same directory.
- ``mix_scan``: frames/s of the loader's scan (read, decompress, find and parse trades;
  no database) on a mix of ~5% trades and books/price changes, against bare zstd
  decompression of the same segments; also the same scan without the C accelerator
  (its Python twin, what a host without a C compiler gets) and a floor for any scan
  written in Python (decompression plus one newline count, in one thread).
- ``loader``: idle ``loader run`` CPU, ``loader status`` time and new-segment latency with
  a year of ``wal_segments`` rows and 20,000 files, against schema v1's poll
  (bench/archive_loader.py).

Run as ``python -m bench.archive`` (or ``make bench``). Writes the ``archive`` section of
bench/results.json. ``--segments`` and ``--mix-frames`` scale it down. More sections
(one function each) may be added; ``main`` runs them all.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

import zstandard

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import archive_loader  # noqa: E402
from bench.loader import write_wal  # noqa: E402
from bench.mix import TRADE_SHARE, mix_texts, price_change_text  # noqa: E402
from bench.results import write_section  # noqa: E402
from loader import scan as loader_scan  # noqa: E402
from loader.load import CURRENT_PARSER, read_batches  # noqa: E402
from wal import SegmentReader  # noqa: E402
from wal.naming import make_name  # noqa: E402
from wal.records import encode_record, frame, seal, segment_header  # noqa: E402
from wal.segment import compressor  # noqa: E402

SEGMENTS = 20_000  # about 70 days of 5-minute segments
MIX_FRAMES = 800_000  # a few seconds of scanning
FRAMES_PER_SMALL_SEGMENT = 4
BASE_NS = 1_786_728_467_000_000_000
GOAL_LS_S = 5.0
GOAL_SCAN = 1_000_000
ROUNDS = 2  # best of this many per measurement: the machine is shared and noisy


def build_small_segments(directory: Path, count: int) -> None:
    """``count`` sealed segments as the writer lays them out: a first zstd frame with the
    header and some frames, a last one with a frame and the seal."""
    cctx = compressor(3)
    for seq in range(count):
        created = BASE_NS + seq * 300 * 10**9
        header = segment_header(seq, created, "bench/archive", host="bench")
        body = [
            frame(created + i, 0, i, price_change_text(i, random.Random(seq)))
            for i in range(FRAMES_PER_SMALL_SEGMENT)
        ]
        first = b"".join(encode_record(r) for r in [header, *body[:-1]])
        last = encode_record(body[-1])
        last += encode_record(seal(created + 10**9, len(body) + 2, len(body)))
        data = cctx.compress(first) + cctx.compress(last)
        (directory / make_name(seq, created).sealed_name).write_bytes(data)


def wal_ls_seconds(directory: Path, *extra: str) -> tuple[float, int]:
    """Wall time of a real ``wal ls`` process, and the lines it printed."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "wal.cli", "ls", str(directory), *extra],
        capture_output=True,
        check=True,
        cwd=ROOT,
    )
    return time.perf_counter() - start, done.stdout.count(b"\n")


def wal_ls_section(tmp: Path, segments: int) -> dict[str, Any]:
    directory = tmp / "small"
    directory.mkdir()
    build_small_segments(directory, segments)
    fast = min(wal_ls_seconds(directory) for _ in range(ROUNDS))
    deep = min(wal_ls_seconds(directory, "--deep") for _ in range(ROUNDS))
    assert fast[1] == deep[1] == segments, (fast, deep)
    print(f"wal ls: {fast[0]:.2f} s; --deep {deep[0]:.2f} s", file=sys.stderr)
    return {
        "segments": segments,
        "seconds": round(fast[0], 3),
        "baseline": {"what": "wal ls --deep: decode every record", "seconds": round(deep[0], 3)},
        "ratio": round(deep[0] / fast[0], 2),
        "ratio_means": "baseline seconds / wal ls seconds (higher is better)",
        "goal_seconds": GOAL_LS_S,
    }


def scan_rate(paths: list[Path]) -> tuple[float, int, int]:
    """(frames/s, frames, trades) of the loader's scan, no database."""
    frames = trades = 0
    start = time.perf_counter()
    for path in paths:
        for _end, result in read_batches(path, 0, CURRENT_PARSER):
            frames += result.frames
            trades += len(result.rows)
    return frames / (time.perf_counter() - start), frames, trades


def decompress_seconds(paths: list[Path]) -> float:
    """Bare zstd decompression of every frame of every segment, output thrown away."""
    dctx = zstandard.ZstdDecompressor()
    start = time.perf_counter()
    for path in paths:
        with path.open("rb") as f, dctx.stream_reader(f, read_across_frames=True) as reader:
            while reader.read(1 << 20):
                pass
    return time.perf_counter() - start


def count_floor_seconds(paths: list[Path]) -> float:
    """Decompression plus one ``bytes.count`` of the newlines: the least any scanner
    written in Python with the standard library does (each more search is another pass)."""
    start = time.perf_counter()
    for path in paths:
        for batch in SegmentReader(path, tolerate_torn_tail=False).batches(0):
            batch.data.count(b"\n")
    return time.perf_counter() - start


def mix_scan_section(tmp: Path, count: int) -> dict[str, Any]:
    directory = tmp / "mix"
    directory.mkdir()
    wal_bytes = write_wal(directory, mix_texts(count))
    paths = sorted(directory.iterdir())
    scans, bares, floors, twins = [], [], [], []
    for _ in range(ROUNDS):  # interleaved, so all see the same machine
        scans.append(scan_rate(paths))
        bares.append(count / decompress_seconds(paths))
        floors.append(count / count_floor_seconds(paths))
        with (
            mock.patch.object(loader_scan, "lines", loader_scan.py_lines),
            mock.patch.object(loader_scan, "trade_fields", None),
        ):
            twins.append(scan_rate(paths)[0])
    scan, frames, trades = max(scans)
    bare, floor, twin = max(bares), max(floors), max(twins)
    assert frames == count, (frames, count)
    print(f"mix scan: {scan:,.0f} frames/s; bare zstd {bare:,.0f} frames/s", file=sys.stderr)
    return {
        "frames": frames,
        "trades": trades,
        "trade_share": TRADE_SHARE,
        "wal_bytes": wal_bytes,
        "frames_per_s": round(scan),
        "baseline": {"what": "bare zstd decompression, same segments", "frames_per_s": round(bare)},
        "ratio": round(scan / bare, 3),
        "ratio_means": "scan frames/s / bare decompression frames/s",
        "goal_frames_per_s": GOAL_SCAN,
        "python_floor": {
            "what": "the reader's decompression plus one newline count, in one thread: the"
            " ceiling of a scan written in Python",
            "frames_per_s": round(floor),
            "scan_ratio": round(scan / floor, 3),
        },
        "without_accelerator": {
            "what": "the same scan by loader/scan.py and parse.py alone (no C build)",
            "frames_per_s": round(twin),
            "ratio": round(twin / bare, 3),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--segments", type=int, default=SEGMENTS)
    parser.add_argument("--mix-frames", type=int, default=MIX_FRAMES)
    parser.add_argument("--rows", type=int, default=archive_loader.ROWS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-archive-") as tmp:
        ls = wal_ls_section(Path(tmp), args.segments)
        scan = mix_scan_section(Path(tmp), args.mix_frames)
    loader = archive_loader.run(args.rows, args.segments)
    write_section(
        "archive",
        {
            "wal_ls": ls,
            "mix_scan": scan,
            "loader": loader,
            "baseline": scan["baseline"],
            "ratio": scan["ratio"],
            "ratio_means": "mix_scan: " + scan["ratio_means"],
        },
    )


if __name__ == "__main__":
    main()
