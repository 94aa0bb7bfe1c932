"""WAL writer throughput: 1M realistic frame records, default flush settings.

Run as `python -m bench.wal_append` (or `make bench`).

Baseline, measured in the same run: the same records written as plain uncompressed JSONL
with the same fsync cadence (a write + fdatasync per 100 ms or 1 MiB). The ratio is
WAL time / baseline time (the cost of batching, compressing and the writer thread).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from bench.feed import frames
from bench.results import write_section
from wal import Policy, WalWriter
from wal.records import encode_frame

COUNT = int(os.environ.get("BENCH_WAL_RECORDS", "1000000"))
FLUSH_S = Policy().flush_ms / 1000
BATCH_BYTES = Policy().batch_bytes
IN_FLIGHT = 50_000  # records the producer may run ahead of fsync (~25 MB, well under the bound)


def run_wal(texts: list[str], directory: Path) -> tuple[float, int, int]:
    writer = WalWriter.open(directory)  # default policy: 100 ms / 1 MiB, rotate 300 s / 64 MiB
    started = time.perf_counter()
    ts = time.time_ns()
    for n, text in enumerate(texts):
        if n % IN_FLIGHT == 0 and n:
            writer.wait_durable(n - IN_FLIGHT)  # measure what is sustained, not a burst
        writer.append_frame(ts + n, 0, n, text)
    assert writer.close(600)
    elapsed = time.perf_counter() - started
    assert writer.stats.durable == len(texts) and writer.stats.dropped_total == 0
    return elapsed, writer.stats.bytes_in, writer.stats.bytes_out


def run_plain(texts: list[str], path: Path) -> tuple[float, int]:
    """Plain JSONL, one thread: encode, buffer, write + fdatasync per 100 ms or 1 MiB."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    started = time.perf_counter()
    ts = time.time_ns()
    buf: list[bytes] = []
    size = 0
    first = 0.0
    written = 0
    for n, text in enumerate(texts):
        line = encode_frame(ts + n, 0, n, text)
        if not buf:
            first = time.perf_counter()
        buf.append(line)
        size += len(line)
        if size >= BATCH_BYTES or time.perf_counter() - first >= FLUSH_S:
            written += os.write(fd, b"".join(buf))
            os.fdatasync(fd)
            buf, size = [], 0
    if buf:
        written += os.write(fd, b"".join(buf))
        os.fdatasync(fd)
    os.close(fd)
    return time.perf_counter() - started, written


def main() -> None:
    texts = list(frames(COUNT))
    avg = sum(len(t) for t in texts) / len(texts)
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as tmp:
        wal_s, bytes_in, bytes_out = run_wal(texts, Path(tmp) / "wal")
        plain_s, plain_bytes = run_plain(texts, Path(tmp) / "plain.jsonl")
    write_section(
        "wal_append",
        {
            "records": COUNT,
            "avg_frame_text_bytes": round(avg, 1),
            "records_per_s": round(COUNT / wal_s),
            "input_mb_per_s": round(bytes_in / wal_s / 1e6, 1),
            "compression_ratio": round(bytes_in / bytes_out, 2),
            "seconds": round(wal_s, 3),
            "baseline": {
                "what": "plain JSONL, same records and fsync cadence, no compression",
                "records_per_s": round(COUNT / plain_s),
                "seconds": round(plain_s, 3),
                "bytes": plain_bytes,
            },
            "ratio": round(wal_s / plain_s, 3),
            "ratio_means": "WAL time / baseline time (goal <= 2.0)",
            "goal_records_per_s": 200_000,
        },
    )


if __name__ == "__main__":
    main()
