"""Capture's receive path against a bare client, at saturation (``make bench``).

Writes the ``capture`` section of bench/results.json:

1. Saturation. ``bench/flood.py`` pushes pre-encoded realistic frames over one loopback
   connection as fast as the socket takes them. Its own rate into a raw byte sink is
   measured first; the run fails unless it outruns the bare client by
   ``SENDER_HEADROOM``, so that what is measured is the receiver, not the sender. Then
   (a) a bare websockets client that discards frames and (b) ``capture run`` writing the
   WAL are measured alternately, ``ROUNDS`` times each, in their own processes: frames/s
   (medians) and their ratio (goal >= 0.9).
2. CPU at a fixed rate below saturation (``FIXED_RATE`` frames/s): CPU seconds (user +
   system, all threads: capture's writer thread included) per million frames of each
   (goal: capture <= 2x the bare client); and of ``capture run --redundancy 2`` at the
   same total rate (two connections of ``FIXED_RATE / 2`` each), against ``--redundancy
   1``: what a replica costs per frame.
3. Memory bound: with the disk stalled (test hook) and ``--max-buffer-mb 64``, RSS growth
   of capture over the bound for PONG-sized and ~2 KB frames (goal <= 1.2).
4. RSS of ``capture run`` with 20,000 assets over 100 connections (the fake exchange).
   Goal: < 150 MB; with ``--redundancy 2`` (200 connections), < 200 MB.

The machine is shared: every figure is compared only with its baseline from the same
run, and rounds alternate so that a burst of load hits both sides alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import write_section  # noqa: E402

DURATION_S = 5.0  # each throughput measurement; long enough to smooth out batching
ROUNDS = 5  # (a) and (b) alternate; medians, since the machine is shared
WARMUP_S = 2.0  # connection setup and the first batches are not what we measure
SENDER_HEADROOM = 1.5  # the sender must push this much more than the bare client takes
FIXED_RATE = 20_000  # frames/s for the CPU comparison: well below either's saturation
FIXED_S = 8.0
BOUND_MB = 64  # --max-buffer-mb for the memory-bound measurement
BOUND_GOAL = 1.2  # RSS growth / bound
BOUND_DELAY_S = 3.0  # the sender waits this long after the handshake: RSS baseline first
BOUND_DROPS = 10_000  # the buffer is surely full once this many frames were dropped
RSS_ASSETS = 20_000
RSS_CONNS = 100
RSS_SETTLE_S = 10.0  # after all connections are up, let buffers and dumps settle
RSS_GOAL_MB = {1: 150, 2: 200}  # by --redundancy
CLK_TCK = os.sysconf("SC_CLK_TCK")


def start(cmd: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen(
        [sys.executable, *cmd], cwd=ROOT, stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def flood(
    rate: float = 0, payload_bytes: int = 0, delay: float = 0
) -> tuple[subprocess.Popen, dict]:
    args = ["--rate", str(rate), "--payload-bytes", str(payload_bytes), "--delay", str(delay)]
    return start(["-m", "bench.flood", *args])


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int) -> tuple[int, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


# ----- (a) the bare client, run as ``python -m bench.capture --bare URL SECONDS`` -----


async def bare_client(url: str, seconds: float) -> dict:
    """Receive and discard, with capture's connection settings; count and CPU sampled
    by loop callbacks after the warm-up and at the end."""
    from websockets.asyncio.client import connect

    from capture.protocol import PING_TEXT, initial_subscribe

    loop = asyncio.get_running_loop()
    count = 0
    marks: list[tuple[float, int, float]] = []

    def mark() -> None:
        marks.append((time.monotonic(), count, time.process_time()))

    async with connect(url, max_size=64 << 20, ping_interval=None) as ws:
        await ws.send(initial_subscribe(["1"]))
        loop.call_later(WARMUP_S, mark)
        loop.call_later(WARMUP_S + seconds, mark)
        async for _ in ws:
            count += 1
            if len(marks) == 2:
                break
            if count % 100_000 == 0:
                await ws.send(PING_TEXT)  # like capture's keepalive; the sender ignores it
    (t0, n0, c0), (t1, n1, c1) = marks
    return {"frames": n1 - n0, "seconds": t1 - t0, "cpu_s": c1 - c0}


def run_bare(url: str, seconds: float) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "bench.capture", "--bare", url, str(seconds)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


# ----- (b) capture run -----


def run_capture(wal_dir: Path, args: list[str], env: dict[str, str] | None = None):
    cmd = ["-m", "capture", "run", "--wal-dir", str(wal_dir), "--status-interval", "0.5"]
    cmd += ["--log-level", "warning", "--pong-timeout", "600", "--silence-timeout", "600"]
    return subprocess.Popen(
        [sys.executable, *cmd, *args], cwd=ROOT, env={**os.environ, **(env or {})}
    )


def status(wal_dir: Path) -> dict:
    try:
        return json.loads((wal_dir / "capture.status.json").read_text())
    except (OSError, ValueError):
        return {}


def wait_status(wal_dir: Path, pid: int, ok: Callable[[dict], bool], timeout=120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = status(wal_dir)
        if doc.get("pid") == pid and ok(doc):
            return doc
        time.sleep(0.01)
    raise RuntimeError(f"capture did not reach the expected state: {status(wal_dir)}")


def fresh_sample(wal_dir: Path, pid: int) -> tuple[dict, float]:
    """The next status document, and the process's CPU read right as it appeared."""
    before = status(wal_dir).get("updated_ns")
    doc = wait_status(wal_dir, pid, lambda d: d.get("updated_ns") != before)
    return doc, cpu_s(pid)


def measure_capture(url: str, wal_dir: Path, seconds: float, extra: tuple[str, ...] = ()) -> dict:
    proc = run_capture(wal_dir, ["--url", url, "--asset", "1", *extra])
    try:
        wait_status(wal_dir, proc.pid, lambda d: d["frames"] > 0)
        time.sleep(WARMUP_S)
        first, cpu0 = fresh_sample(wal_dir, proc.pid)
        time.sleep(seconds)
        last, cpu1 = fresh_sample(wal_dir, proc.pid)
    finally:
        stop(proc)
    return {
        "frames": last["frames"] - first["frames"],
        "seconds": (last["updated_ns"] - first["updated_ns"]) / 1e9,
        "cpu_s": cpu1 - cpu0,
        "dropped": last["wal"]["dropped_total"],
        "exit_code": proc.returncode,
    }


def saturation(tmp: Path) -> dict:
    from bench.flood import raw_sink_rate

    sender, info = flood()
    bare: list[float] = []
    captured: list[float] = []
    problems: list[str] = []
    try:
        sender_rate = raw_sink_rate(info["url"], DURATION_S, info["frame_bytes"])
        for i in range(ROUNDS):
            b = run_bare(info["url"], DURATION_S)
            bare.append(b["frames"] / b["seconds"])
            c = measure_capture(info["url"], tmp / f"wal-sat-{i}", DURATION_S)
            captured.append(c["frames"] / c["seconds"])
            if c["dropped"] or c["exit_code"] != 0:
                problems.append(f"round {i}: capture dropped {c['dropped']}, exit {c['exit_code']}")
    finally:
        stop(sender)
    if sender_rate < SENDER_HEADROOM * max(bare):
        raise SystemExit(
            f"the sender ({sender_rate:.0f} frames/s) does not outrun the bare client "
            f"({max(bare):.0f}) by {SENDER_HEADROOM}x: the measurement would be the sender's"
        )
    bare_fps, capture_fps = statistics.median(bare), statistics.median(captured)
    return {
        "sender_frames_per_s": round(sender_rate),
        "sender_frame_bytes": round(info["frame_bytes"]),
        "bare_client_frames_per_s": round(bare_fps),
        "capture_frames_per_s": round(capture_fps),
        "ratio": round(capture_fps / bare_fps, 3),
        "ratio_goal": 0.9,
        "rounds": {"bare": [round(r) for r in bare], "capture": [round(r) for r in captured]},
        "problems": problems,
        "measure_s": DURATION_S,
    }


def cpu_at_fixed_rate(tmp: Path) -> dict:
    sender, info = flood(FIXED_RATE)
    half, half_info = flood(FIXED_RATE / 2)  # each of the two replicas gets this rate
    replicas = ("--redundancy", "2", "--replica-stagger", "0.1")
    try:
        b = run_bare(info["url"], FIXED_S)
        c = measure_capture(info["url"], tmp / "wal-fixed", FIXED_S)
        c2 = measure_capture(half_info["url"], tmp / "wal-fixed-r2", FIXED_S, replicas)
    finally:
        stop(sender)
        stop(half)
    bare_cpu = b["cpu_s"] / b["frames"] * 1e6
    capture_cpu = c["cpu_s"] / c["frames"] * 1e6
    r2_cpu = c2["cpu_s"] / c2["frames"] * 1e6
    return {
        "fixed_rate_frames_per_s": FIXED_RATE,
        "fixed_bare_frames_per_s": round(b["frames"] / b["seconds"]),
        "fixed_capture_frames_per_s": round(c["frames"] / c["seconds"]),
        "bare_cpu_s_per_million_frames": round(bare_cpu, 2),
        "capture_cpu_s_per_million_frames": round(capture_cpu, 2),
        "cpu_ratio": round(capture_cpu / bare_cpu, 3),
        "cpu_ratio_goal": 2.0,
        "fixed_redundancy2_frames_per_s": round(c2["frames"] / c2["seconds"]),
        "redundancy2_cpu_s_per_million_frames": round(r2_cpu, 2),
        "redundancy2_cpu_ratio": round(r2_cpu / capture_cpu, 3),
        "redundancy2_means": "CPU per frame, --redundancy 2 / --redundancy 1, same total rate",
    }


def memory_bound(tmp: Path, payload_bytes: int) -> dict:
    """RSS growth with the disk stalled until the buffer is full and frames are dropped:
    the baseline is taken once connected, before the sender starts (BOUND_DELAY_S)."""
    from wal.slowdisk import STALL_FILE_ENV

    sender, info = flood(payload_bytes=payload_bytes, delay=BOUND_DELAY_S)
    wal_dir = tmp / f"wal-bound-{payload_bytes}"
    stall = tmp / f"stall-{payload_bytes}"
    stall.touch()
    args = ["--url", info["url"], "--asset", "1", "--max-buffer-mb", str(BOUND_MB)]
    proc = run_capture(wal_dir, args, env={STALL_FILE_ENV: str(stall)})
    try:
        wait_status(wal_dir, proc.pid, lambda d: d["connections_up"] == 1)
        before, _ = rss_kib(proc.pid)
        wait_status(wal_dir, proc.pid, lambda d: d["wal"]["dropped_total"] > BOUND_DROPS)
        time.sleep(1.0)  # drops go on: memory must not
        after, peak = rss_kib(proc.pid)
    finally:
        proc.kill()
        proc.wait()
        stop(sender)
    growth = (max(after, peak) - before) / 1024
    return {"growth_mb": round(growth, 1), "ratio": round(growth / BOUND_MB, 3)}


def rss_at_scale(tmp: Path, redundancy: int = 1) -> dict:
    exchange, info = start(
        ["-m", "tests.fakes.exchange", "--assets", str(RSS_ASSETS), "--rate", "1", "--seed", "6"]
    )
    wal_dir = tmp / f"wal-rss-{redundancy}"
    conns = RSS_CONNS * redundancy
    try:
        assets_file = tmp / "assets.txt"
        from capture.discovery import fetch_open_tokens

        tokens = fetch_open_tokens(info["gamma_url"])
        assets_file.write_text("\n".join(tokens) + "\n")
        per_conn = str(-(-len(tokens) // RSS_CONNS))  # rounded up: RSS_CONNS shards
        args = ["--url", info["ws_url"], "--assets-file", str(assets_file)]
        args += ["--redundancy", str(redundancy)]
        proc = run_capture(wal_dir, [*args, "--max-assets-per-conn", per_conn])
        try:
            wait_status(wal_dir, proc.pid, lambda d: d["connections_up"] == conns)
            time.sleep(RSS_SETTLE_S)
            rss, peak = rss_kib(proc.pid)
            doc = status(wal_dir)
        finally:
            stop(proc)
    finally:
        stop(exchange)
    suffix = "" if redundancy == 1 else f"_redundancy{redundancy}"
    return {
        f"rss{suffix}_assets": doc["assets"],
        f"rss{suffix}_connections": len(doc["connections"]),
        f"rss{suffix}_mb": round(rss / 1024, 1),
        f"rss{suffix}_peak_mb": round(peak / 1024, 1),
        f"rss{suffix}_goal_mb": RSS_GOAL_MB[redundancy],
    }


PARTS = ("saturation", "cpu", "bound", "rss")


def main(parts: tuple[str, ...] = PARTS) -> None:
    """Run ``parts`` of the benchmark; all of them write the ``capture`` section, fewer
    only print what they measured (for quick iterations)."""
    section: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-capture-") as name:
        tmp = Path(name)
        if "saturation" in parts:
            section.update(saturation(tmp))
            section["baseline"] = {
                "what": "bare websockets client discarding frames, same sender, same run",
                "frames_per_s": section["bare_client_frames_per_s"],
            }
            section["ratio_means"] = "capture frames/s / bare client frames/s at saturation"
        if "cpu" in parts:
            section.update(cpu_at_fixed_rate(tmp))
        if "bound" in parts:
            section["memory_bound_mb"] = BOUND_MB
            section["memory_bound_goal"] = BOUND_GOAL
            section["memory_bound_pong"] = memory_bound(tmp, 4)
            section["memory_bound_2kb"] = memory_bound(tmp, 2000)
        if "rss" in parts:
            section.update(rss_at_scale(tmp))
            section.update(rss_at_scale(tmp, redundancy=2))
        section["noise"] = "shared 2-core machine: ratios are from one run; rounds vary"
    if set(parts) == set(PARTS):
        write_section("capture", section)
    else:
        print(json.dumps(section, indent=2, sort_keys=True))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bare", nargs=2, metavar=("URL", "SECONDS"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--only",
        action="append",
        choices=PARTS,
        help="run only this part (repeatable); prints it, results.json is left alone",
    )
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="saturation rounds")
    parser.add_argument("--seconds", type=float, default=DURATION_S, help="each measurement")
    opts = parser.parse_args()
    if opts.bare:
        print(json.dumps(asyncio.run(bare_client(opts.bare[0], float(opts.bare[1])))))
    else:
        ROUNDS, DURATION_S = opts.rounds, opts.seconds
        main(tuple(opts.only or PARTS))
