"""SIGKILL a writer at random moments; every record it reported durable must survive."""

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.timeouts import TIMEOUT_S
from tests.wal.helpers import read_all
from wal import WalWriter
from wal.naming import list_segments

ROUNDS = 24
CHILD = Path(__file__).with_name("crash_child.py")
ROOT = Path(__file__).resolve().parents[2]


def _run_round(directory: Path, round_no: int, rng: random.Random) -> int:
    """Start the child, kill it at a random moment; return the last durable count it printed."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(directory), str(round_no)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    last = [0]

    def pump() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            last[0] = int(line)

    reader = threading.Thread(target=pump)
    reader.start()
    time.sleep(rng.uniform(0.0, 0.4))
    child.send_signal(signal.SIGKILL)
    child.wait(TIMEOUT_S)
    reader.join(TIMEOUT_S)
    child.stdout.close()
    return last[0]


def test_sigkill_never_loses_a_record_reported_durable(tmp_path):
    rng = random.Random(20261124)
    durable = {r: _run_round(tmp_path, r, rng) for r in range(ROUNDS)}
    WalWriter.open(tmp_path).close(TIMEOUT_S)  # recovery of the last open segment

    seen: dict[int, list[int]] = {r: [] for r in range(ROUNDS)}
    for name, path in list_segments(tmp_path):
        assert not name.is_open
        for record in read_all(path):  # the strict reader: every segment is intact
            if record["type"] == "frame":
                seen[record["conn"]].append(record["n"])
    for r in range(ROUNDS):
        got = seen[r]
        assert got == list(range(len(got))), f"round {r}: records out of order or duplicated"
        assert len(got) >= durable[r], f"round {r}: {durable[r]} durable, {len(got)} survived"
    assert sum(durable.values()) > 0
    verify = subprocess.run(
        [sys.executable, "-m", "wal.cli", "verify", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert verify.returncode == 0, verify.stdout
