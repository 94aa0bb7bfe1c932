"""The fake exchange as its own process: URLs on stdout, control endpoints, --record."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from websockets.asyncio.client import connect

from capture.protocol import initial_subscribe
from tests.timeouts import TIMEOUT_S

ROOT = Path(__file__).resolve().parents[2]


def get(url: str, method: str = "GET") -> dict:
    request = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        return json.loads(response.read())


async def test_process_mode_serves_records_and_takes_control(tmp_path):
    record = tmp_path / "sent.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fakes.exchange",
            "--assets",
            "4",
            "--rate",
            "50",
            "--seed",
            "2",
            "--record",
            str(record),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        markets = get(info["gamma_url"] + "/markets/keyset?limit=100&closed=false&active=true")
        tokens = [t for m in markets["markets"] for t in json.loads(m["clobTokenIds"])]
        assert len(tokens) == 4 and "next_cursor" not in markets
        got: list[str] = []
        async with connect(info["ws_url"], ping_interval=None) as ws:
            await ws.send(initial_subscribe(tokens))
            await ws.send("PING")
            while "PONG" not in got or len(got) < 5:
                got.append(str(await ws.recv(decode=True)))
            stats = get(info["gamma_url"] + "/control/stats", "POST")
            assert stats["connections"] == 1
        assert json.loads(got[0])[0]["event_type"] == "book"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(TIMEOUT_S)
        if proc.stdout is not None:
            proc.stdout.close()
    sent = [json.loads(line) for line in record.read_text().splitlines()]
    assert [s["text"] for s in sent[: len(got)]] == got
    assert {s["conn"] for s in sent} == {0}
