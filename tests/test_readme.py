"""Every command in the README's ``sh`` blocks runs, so none of them rots.

Commands run in README order against a fake exchange, a throwaway PostgreSQL and a WAL
that a real ``capture run`` wrote. Daemons (``capture run``, ``loader run`` without
``--once``) run for a few seconds and must exit 0 on SIGTERM. ``sudo``/``journalctl``
lines need a systemd host: the files they name must exist and the units' ``ExecStart``
commands must parse.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.pipeline import BIN, ROOT, run_cli, start_capture, start_exchange
from tests.timeouts import TIMEOUT_S, scaled
from wal.naming import list_sealed

README = ROOT / "README.md"
DAEMON_S = 3.0  # how long a daemon command runs before SIGTERM
PROVIDED = {"WAL_DIR", "LOADER_DSN", "BACKUP", "SEGMENT", "ASSETS_FILE"}


def readme_commands() -> list[str]:
    text = README.read_text()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def _is_daemon(command: str) -> bool:
    return command.startswith("capture run") or (
        command.startswith("loader run") and "--once" not in command
    )


@pytest.fixture
def env(tmp_path: Path, fresh_db: str) -> Iterator[dict[str, str]]:
    wal_dir = tmp_path / "wal"
    exchange = start_exchange(tmp_path, assets=20, rate=30)
    try:
        capture = start_capture(tmp_path, wal_dir, exchange, "--rotate-seconds", "1")
        time.sleep(scaled(4))
        assert capture.stop() == 0, capture.tail()
        run_cli("loader", "--dsn", fresh_db, "init-db")
        run_cli("loader", "--dsn", fresh_db, "run", "--wal-dir", str(wal_dir), "--once")
        assets = tmp_path / "assets.txt"
        assets.write_text("# one token id per line\n" + _a_token(exchange.gamma_url) + "\n")
        yield {
            **os.environ,
            "PATH": f"{BIN}:{os.environ['PATH']}",
            "WAL_DIR": str(wal_dir),
            "LOADER_DSN": fresh_db,
            "BACKUP": str(tmp_path / "backup"),
            "SEGMENT": str(list_sealed(wal_dir)[0]),
            "ASSETS_FILE": str(assets),
            "CAPTURE_URL": exchange.ws_url,
            "CAPTURE_GAMMA_URL": exchange.gamma_url,
        }
    finally:
        exchange.stop()


def test_every_readme_command_runs(env: dict[str, str]) -> None:
    commands = readme_commands()
    assert len(commands) > 20
    for command in commands:
        if command.startswith("export "):
            assert command.split()[1].split("=")[0] in PROVIDED, command
        elif command.startswith("make "):
            _check_make_target(command)
        elif command.startswith(("sudo ", "journalctl ")):
            _check_deploy_line(command)
        elif _is_daemon(command):
            _run_daemon(command, env)
        elif command.startswith("capture status"):
            with _capture_running(env):
                _run(command, env)
        else:
            _run(command, env)


def _run(command: str, env: dict[str, str]) -> None:
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=scaled(120),
    )
    sigpipe = result.returncode == 141 and "| head" in command
    assert result.returncode == 0 or sigpipe, f"{command}\n{result.stderr}"


def test_systemd_units_start_commands_that_exist() -> None:
    for unit in (ROOT / "deploy" / "systemd").glob("*.service"):
        text = unit.read_text()
        assert len(re.findall(r"^ExecStart=", text, re.M)) == 1, unit.name
        for exec_line in re.findall(r"^ExecStart(?:Pre|Post)?=(.*)$", text, re.M):
            argv = shlex.split(exec_line.lstrip("-@:+!"))  # systemd's prefixes
            program = BIN / Path(argv[0]).name
            assert argv[0].startswith("/opt/polymarket-capture/.venv/bin/"), exec_line
            result = subprocess.run([str(program), *argv[1:], "--help"], capture_output=True)
            assert result.returncode == 0, f"{unit.name}: {exec_line}"


def _a_token(gamma_url: str) -> str:
    with urllib.request.urlopen(f"{gamma_url}/markets?limit=1", timeout=TIMEOUT_S) as resp:
        market = json.loads(resp.read())[0]
    return str(json.loads(market["clobTokenIds"])[0])


@contextlib.contextmanager
def _capture_running(env: dict[str, str]) -> Iterator[None]:
    """A capture daemon on the README's WAL dir, up and reporting, for the block."""
    proc = subprocess.Popen(
        [
            str(BIN / "capture"),
            "run",
            "--wal-dir",
            env["WAL_DIR"],
            "--discover",
            "--status-interval",
            "0.2",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    status = [str(BIN / "capture"), "status", "--wal-dir", env["WAL_DIR"]]
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while subprocess.run(status, capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, "capture did not come up"
            time.sleep(0.1)
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT_S) == 0


def _check_make_target(command: str) -> None:
    target = command.split()[1]
    assert re.search(rf"^{re.escape(target)}:", (ROOT / "Makefile").read_text(), re.M), command


def _check_deploy_line(command: str) -> None:
    for word in shlex.split(command):
        if word.startswith("deploy/"):
            assert (ROOT / word).exists(), f"{command}: {word} does not exist"


def _run_daemon(command: str, env: dict[str, str]) -> None:
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {command}"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(scaled(DAEMON_S))
        assert proc.poll() is None, f"{command} exited early:\n{proc.communicate()[0]}"
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=TIMEOUT_S)
        assert proc.returncode == 0, f"{command} exited {proc.returncode}:\n{output}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze not found: install systemd (Debian: apt-get install systemd)"
    for unit in (ROOT / "deploy" / "systemd").glob("*.service"):
        # Point the units at this checkout's .venv instead of /opt/polymarket-capture.
        text = unit.read_text().replace("/opt/polymarket-capture/.venv/bin/", f"{BIN}/")
        (tmp_path / unit.name).write_text(text)
    units = sorted(str(p) for p in tmp_path.glob("*.service"))
    result = subprocess.run([analyze, "verify", *units], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
