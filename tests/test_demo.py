"""``make demo`` (scripts/demo.py) runs end to end and its report checks out."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from scripts.pipeline import ROOT
from tests.timeouts import scaled
from wal.native import PURE_PYTHON_ENV


def test_demo_runs_twice_and_reports_every_trade_loaded():
    # Under /tmp itself: pytest's tmp dirs are root-only and the server may run as postgres.
    demo_dir = Path(tempfile.mkdtemp(prefix="demo-"))
    demo_dir.chmod(0o755)
    try:
        _run_demo({**os.environ, "POLYMARKET_DEMO_DIR": str(demo_dir / "demo")})
    finally:
        shutil.rmtree(demo_dir, ignore_errors=True)


def test_the_demo_on_the_python_twins_of_the_accelerators_loads_every_trade():
    """As on a host without a C compiler: capture and loader on the pure-Python paths."""
    demo_dir = Path(tempfile.mkdtemp(prefix="demo-"))
    demo_dir.chmod(0o755)
    env = {**os.environ, "POLYMARKET_DEMO_DIR": str(demo_dir / "demo"), PURE_PYTHON_ENV: "1"}
    flags = "from loader import scan; from wal import records; from capture import protocol;"
    flags += "print(scan.ACCELERATED, records.ACCELERATED, protocol.marked is protocol.py_marked)"
    try:
        shown = subprocess.run([sys.executable, "-c", flags], env=env, capture_output=True)
        assert shown.stdout.split() == [b"False", b"False", b"True"], shown
        _run_demo(env, runs=1)
    finally:
        shutil.rmtree(demo_dir, ignore_errors=True)


def _run_demo(env, runs=2):
    for _ in range(runs):  # a second run starts from scratch, whatever the first left
        result = subprocess.run(
            [sys.executable, "-m", "scripts.demo", "--seconds", "6"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=scaled(180),
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "all sent trades loaded exactly once" in result.stdout
        assert "top markets by traded size" in result.stdout
    stop = subprocess.run([sys.executable, "-m", "scripts.demo", "--stop"], cwd=ROOT, env=env)
    assert stop.returncode == 0
