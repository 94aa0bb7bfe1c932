"""``make demo`` (scripts/demo.py) runs end to end and its report checks out."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from scripts.pipeline import ROOT
from tests.timeouts import scaled


def test_demo_runs_twice_and_reports_every_trade_loaded():
    # Under /tmp itself: pytest's tmp dirs are root-only and the server may run as postgres.
    demo_dir = Path(tempfile.mkdtemp(prefix="demo-"))
    demo_dir.chmod(0o755)
    try:
        _run_demo_twice({**os.environ, "POLYMARKET_DEMO_DIR": str(demo_dir / "demo")})
    finally:
        shutil.rmtree(demo_dir, ignore_errors=True)


def _run_demo_twice(env):
    for _ in range(2):  # a second run starts from scratch, whatever the first left
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
