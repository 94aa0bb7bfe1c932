"""Capture throughput and memory (``make bench``; writes the ``capture`` section).

1. The fake exchange, in its own process, pushes realistic frames as fast as it can over
   one connection. Frames/s received by (a) a bare websockets client that discards them
   and (b) ``capture run`` writing the WAL are measured alternately (three rounds each,
   medians) in the same run, against the same server. Goal: (b) >= 0.9 x (a).
2. RSS of ``capture run`` with 20,000 assets over 100 connections. Goal: < 150 MB.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import write_section  # noqa: E402

DURATION_S = 5.0  # each throughput measurement; long enough to smooth out batching
ROUNDS = 3  # (a) and (b) alternate; medians, since the two share the machine with the fake
WARMUP_S = 2.0  # initial dump and connection setup are not what we measure
RSS_ASSETS = 20_000
RSS_CONNS = 100
RSS_SETTLE_S = 10.0  # after all connections are up, let buffers and dumps settle


def start_exchange(*args: str) -> tuple[subprocess.Popen[str], dict]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.exchange", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    info = json.loads(proc.stdout.readline())
    return proc, info


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def tokens_of(gamma_url: str) -> list[str]:
    from capture.discovery import fetch_open_tokens

    return fetch_open_tokens(gamma_url)


async def bare_client(url: str, assets: list[str], duration: float) -> dict:
    """Receive and discard, with the same connection settings as capture."""
    from websockets.asyncio.client import connect

    from capture.protocol import initial_subscribe

    async with connect(url, max_size=64 << 20, ping_interval=None) as ws:
        await ws.send(initial_subscribe(assets))
        count = 0
        start = time.monotonic()
        measured_from, measured_count = 0.0, 0
        next_ping = start + 5
        async for _ in ws:
            count += 1
            now = time.monotonic()
            if not measured_from and now - start >= WARMUP_S:
                measured_from, measured_count = now, count
            if now >= next_ping:
                await ws.send("PING")
                next_ping = now + 5
            if measured_from and now - measured_from >= duration:
                return {"frames": count - measured_count, "seconds": now - measured_from}
    raise RuntimeError("connection closed early")


def status(wal_dir: Path) -> dict:
    try:
        return json.loads((wal_dir / "capture.status.json").read_text())
    except (OSError, ValueError):
        return {}


def run_capture(wal_dir: Path, args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "capture",
            "run",
            "--wal-dir",
            str(wal_dir),
            "--status-interval",
            "0.5",
            "--log-level",
            "warning",
            *args,
        ],
        cwd=ROOT,
    )


def wait_status(wal_dir: Path, pid: int, ok, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = status(wal_dir)
        if doc.get("pid") == pid and ok(doc):
            return doc
        time.sleep(0.1)
    raise RuntimeError(f"capture did not reach the expected state: {status(wal_dir)}")


def capture_rate(url: str, assets: list[str], wal_dir: Path) -> dict:
    proc = run_capture(wal_dir, ["--url", url, *[f"--asset={a}" for a in assets]])
    try:
        wait_status(wal_dir, proc.pid, lambda d: d["frames"] > 0)
        time.sleep(WARMUP_S)
        first = status(wal_dir)
        time.sleep(DURATION_S)
        last = status(wal_dir)
    finally:
        stop(proc)
    seconds = (last["updated_ns"] - first["updated_ns"]) / 1e9
    return {
        "frames": last["frames"] - first["frames"],
        "seconds": seconds,
        "dropped": last["wal"]["dropped_total"],
        "exit_code": proc.returncode,
    }


def rss_kib(pid: int) -> tuple[int, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def throughput(tmp: Path) -> dict:
    exchange, info = start_exchange(
        "--assets", "20", "--rate", "0", "--trade-fraction", "0.3", "--seed", "5"
    )
    bare_rates: list[float] = []
    capture_rates: list[float] = []
    dropped = 0
    try:
        assets = tokens_of(info["gamma_url"])
        for i in range(ROUNDS):
            bare = asyncio.run(bare_client(info["ws_url"], assets, DURATION_S))
            bare_rates.append(bare["frames"] / bare["seconds"])
            captured = capture_rate(info["ws_url"], assets, tmp / f"wal-rate-{i}")
            capture_rates.append(captured["frames"] / captured["seconds"])
            dropped += captured["dropped"]
    finally:
        stop(exchange)
    bare_rate = statistics.median(bare_rates)
    capture_fps = statistics.median(capture_rates)
    return {
        "bare_client_frames_per_s": round(bare_rate),
        "capture_frames_per_s": round(capture_fps),
        "ratio": round(capture_fps / bare_rate, 3),
        "ratio_goal": 0.9,
        "rounds": {
            "bare": [round(r) for r in bare_rates],
            "capture": [round(r) for r in capture_rates],
        },
        "capture_dropped": dropped,
        "measure_s": DURATION_S,
    }


def memory(tmp: Path) -> dict:
    exchange, info = start_exchange("--assets", str(RSS_ASSETS), "--rate", "1", "--seed", "6")
    wal_dir = tmp / "wal-rss"
    try:
        assets = tokens_of(info["gamma_url"])
        assets_file = tmp / "assets.txt"
        assets_file.write_text("\n".join(assets) + "\n")
        proc = run_capture(
            wal_dir,
            [
                "--url",
                info["ws_url"],
                "--assets-file",
                str(assets_file),
                "--max-assets-per-conn",
                str(len(assets) // RSS_CONNS),
            ],
        )
        try:
            doc = wait_status(wal_dir, proc.pid, lambda d: d["connections_up"] == RSS_CONNS)
            time.sleep(RSS_SETTLE_S)
            rss, peak = rss_kib(proc.pid)
            doc = status(wal_dir)
        finally:
            stop(proc)
    finally:
        stop(exchange)
    return {
        "rss_assets": doc["assets"],
        "rss_connections": len(doc["connections"]),
        "rss_mb": round(rss / 1024, 1),
        "rss_peak_mb": round(peak / 1024, 1),
        "rss_goal_mb": 150,
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-capture-") as tmp:
        section = throughput(Path(tmp))
        section["baseline"] = {
            "what": "bare websockets client discarding frames, same server, same run",
            "frames_per_s": section["bare_client_frames_per_s"],
        }
        section["ratio_means"] = "capture frames/s / bare client frames/s (goal >= 0.9)"
        section.update(memory(Path(tmp)))
    write_section("capture", section)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    main()
