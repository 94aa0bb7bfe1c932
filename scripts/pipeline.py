"""Run the whole pipeline as real processes: fake exchange, capture, loader, PostgreSQL.

Shared by ``make demo``, the end-to-end chaos test and ``bench/e2e.py``. Every process
is started from this repository's ``.venv`` (the interpreter running this module), with
its output sent to a log file in the work directory.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loader.parse import parse_frame
from wal.naming import list_sealed
from wal.reader import SegmentReader

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STOP_TIMEOUT_S = 15  # capture seals within 5 s of SIGTERM; the loader finishes a batch


@dataclass
class Proc:
    """A child process with its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> int:
        """Signal the process and wait for it; SIGKILL when it does not exit in time."""
        if self.alive():
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)
        return self.popen.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def tail(self, lines: int = 20) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def spawn(name: str, argv: list[str], workdir: Path, env: dict[str, str] | None = None) -> Proc:
    log = workdir / f"{name}.log"
    with open(log, "ab") as out:
        popen = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        )
    return Proc(name, popen, log)


@dataclass
class Exchange:
    proc: subprocess.Popen[str]
    ws_url: str
    gamma_url: str
    control_url: str
    record: Path
    tokens: int

    def control(self, name: str, **query: Any) -> dict[str, Any]:
        qs = "&".join(f"{k}={v}" for k, v in query.items())
        url = f"{self.control_url}/{name}" + (f"?{qs}" if qs else "")
        with urllib.request.urlopen(url, timeout=10) as resp:  # loopback only
            result: dict[str, Any] = json.loads(resp.read())
        return result

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_exchange(
    workdir: Path,
    *,
    assets: int,
    rate: float,
    seed: int = 1,
    trade_fraction: float = 0.1,
    record_received: bool = False,
    shared_stream: bool = False,
) -> Exchange:
    """The fake exchange in its own process, recording every frame it sends (and, with
    ``record_received``, the subscribe messages it receives)."""
    record = workdir / "exchange-sent.jsonl"
    log = open(workdir / "exchange.log", "ab")  # noqa: SIM115 (lives with the process)
    proc = subprocess.Popen(
        [
            str(BIN / "python"),
            "-m",
            "tests.fakes.exchange",
            "--assets",
            str(assets),
            "--rate",
            str(rate),
            "--seed",
            str(seed),
            "--trade-fraction",
            str(trade_fraction),
            "--record",
            str(record),
            *(["--record-received"] if record_received else []),
            *(["--shared-stream"] if shared_stream else []),
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    log.close()
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait()
        raise RuntimeError(f"fake exchange did not start; see {workdir / 'exchange.log'}")
    info = json.loads(line)
    base = info["gamma_url"].rstrip("/")
    return Exchange(
        proc, info["ws_url"], info["gamma_url"], f"{base}/control", record, info["tokens"]
    )


def start_capture(
    workdir: Path, wal_dir: Path, exchange: Exchange, *extra: str, env: dict[str, str] | None = None
) -> Proc:
    return spawn(
        "capture",
        [
            str(BIN / "capture"),
            "run",
            "--wal-dir",
            str(wal_dir),
            "--discover",
            "--url",
            exchange.ws_url,
            "--gamma-url",
            exchange.gamma_url,
            *extra,
        ],
        workdir,
        env,
    )


def start_loader(workdir: Path, wal_dir: Path, dsn: str, *extra: str) -> Proc:
    wal_dir.mkdir(parents=True, exist_ok=True)  # --wal-dir must exist; capture may be slower
    return spawn(
        "loader",
        [
            str(BIN / "loader"),
            "--dsn",
            dsn,
            "run",
            "--wal-dir",
            str(wal_dir),
            *extra,
        ],
        workdir,
    )


def run_cli(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one of the project's commands to completion (``argv[0]``: capture/loader/wal)."""
    result = subprocess.run(
        [str(BIN / argv[0]), *argv[1:]],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}:\n{result.stderr}")
    return result


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# ----- what was sent, captured and loaded -----

TradeKey = tuple[Any, ...]


def trade_key(row: Any) -> TradeKey:
    """A trade row without where/when it was received: what the exchange sent."""
    return (
        row.ts,
        row.token_id,
        row.side,
        row.price,
        row.size,
        row.market,
        row.fee_rate_bps,
        row.transaction_hash,
    )


def _sent_entries(record: Path) -> Iterator[dict[str, Any]]:
    with open(record, encoding="utf-8") as f:
        for line in f:
            if line.endswith("\n"):  # the last line may be cut by a kill
                entry = json.loads(line)
                if "received" not in entry:  # what a client sent (--record-received)
                    yield entry


def sent_trades(record: Path) -> Counter[TradeKey]:
    """Multiset of the valid trades the fake exchange sent (from its --record file)."""
    trades: Counter[TradeKey] = Counter()
    for entry in _sent_entries(record):
        rows, _ = parse_frame({"type": "frame", "ts_ns": entry["ts_ns"], **_payload(entry)})
        trades.update(trade_key(r) for r in rows)
    return trades


def _payload(entry: dict[str, Any]) -> dict[str, Any]:
    if "text" in entry:
        return {"text": entry["text"]}
    return {"b64": entry.get("b64") or base64.b64encode(b"").decode()}


@dataclass
class WalSummary:
    segments: int = 0
    frames: int = 0
    records: int = 0
    bytes_on_disk: int = 0
    bytes_uncompressed: int = 0
    trades: Counter[TradeKey] = field(default_factory=Counter)  # as sent (trade_key)
    rows: Counter[tuple[Any, ...]] = field(default_factory=Counter)  # full rows, received_at too
    kinds: Counter[str] = field(default_factory=Counter)

    @property
    def compression_ratio(self) -> float:
        return self.bytes_uncompressed / self.bytes_on_disk if self.bytes_on_disk else 0.0


def summarize_wal(wal_dir: Path) -> WalSummary:
    """Read every sealed segment (strictly): counts, sizes and the trades it holds."""
    summary = WalSummary()
    for path in list_sealed(wal_dir):
        summary.segments += 1
        summary.bytes_on_disk += path.stat().st_size
        for batch in SegmentReader(path).batches():
            summary.bytes_uncompressed += sum(len(line) + 1 for line in batch.lines)
            for record in batch.records():
                summary.records += 1
                summary.kinds[record["type"]] += 1
                if record["type"] == "frame":
                    summary.frames += 1
                    rows, _ = parse_frame(record)
                    summary.trades.update(trade_key(r) for r in rows)
                    summary.rows.update(tuple(r) for r in rows)
    return summary
