"""``loader reparse`` shows a progress bar on a terminal (more than one segment), and
logs one line per segment instead when stderr is no terminal."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from pathlib import Path

from tests.loader.conftest import ROOT, loader_cmd, run_loader
from tests.loader.helpers import trade_frame, write_segment
from tests.timeouts import TIMEOUT_S

SEGMENTS = 3


def _loaded_wal(db: str, wal_dir: Path) -> None:
    for seq in range(SEGMENTS):
        write_segment(wal_dir, seq, [[trade_frame(seq)]])
    done = run_loader(db, "run", "--wal-dir", str(wal_dir), "--once")
    assert done.returncode == 0, done.stderr


def _run_with_tty_stderr(*args: str) -> tuple[int, str, str]:
    """Run ``args`` with stderr on a pseudo-terminal; (exit code, stdout, terminal output)."""
    master, slave = pty.openpty()
    try:
        child = subprocess.Popen(
            args,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=slave,
            env={**os.environ, "COLUMNS": "100", "TERM": "xterm"},
        )
        os.close(slave)
        slave = -1
        screen = b""
        deadline = time.monotonic() + TIMEOUT_S * 3
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if not ready:
                if child.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            screen += chunk
        stdout, _ = child.communicate(timeout=TIMEOUT_S)
        return child.returncode, stdout.decode(), screen.decode(errors="replace")
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)


def test_reparse_shows_a_progress_bar_on_a_terminal(db: str, wal_dir: Path) -> None:
    _loaded_wal(db, wal_dir)
    code, _stdout, screen = _run_with_tty_stderr(
        *loader_cmd("--dsn", db, "reparse", "--wal-dir", str(wal_dir), "--all")
    )
    assert code == 0, screen
    assert "reparsing" in screen and "33%" in screen and "100%" in screen, screen
    assert f"reparsed {SEGMENTS} segments, {SEGMENTS} trades" in screen
    assert " loaded: 1 trades" not in screen  # the bar replaces the per-segment log lines


def test_reparse_of_one_segment_on_a_terminal_shows_no_bar(db: str, wal_dir: Path) -> None:
    _loaded_wal(db, wal_dir)
    name = sorted(p.name for p in wal_dir.glob("*.jsonl.zst"))[0]
    code, _stdout, screen = _run_with_tty_stderr(
        *loader_cmd("--dsn", db, "reparse", "--wal-dir", str(wal_dir), "--segment", name)
    )
    assert code == 0, screen
    assert "reparsing" not in screen and "reparsed 1 segments" in screen, screen


def test_reparse_without_a_terminal_logs_instead_of_a_bar(db: str, wal_dir: Path) -> None:
    _loaded_wal(db, wal_dir)
    done = run_loader(db, "reparse", "--wal-dir", str(wal_dir), "--all")
    assert done.returncode == 0, done.stderr
    assert "reparsing" not in done.stderr and "%" not in done.stderr, done.stderr
    assert done.stderr.count("loaded: 1 trades") == SEGMENTS, done.stderr
    assert f"reparsed {SEGMENTS} segments, {SEGMENTS} trades" in done.stderr
