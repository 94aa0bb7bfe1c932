"""Fixtures of the capture tests: a fake exchange and daemons run in-process against it
(modules that need another exchange define their own ``exchange``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from capture.config import Config
from capture.daemon import Daemon
from capture.errors import WalDiedError
from capture.notify import Notifier
from tests.capture.daemon_fixtures import FAST, Runner
from tests.fakes.exchange import FakeExchange
from wal import FileOps


@pytest.fixture
async def exchange() -> AsyncIterator[FakeExchange]:
    async with FakeExchange(assets=10, rate=40, seed=3, ping_timeout=2.0) as ex:
        yield ex


@pytest.fixture
async def run_daemon(tmp_path: Path, exchange: FakeExchange):
    runners: list[Runner] = []

    def _run(ops: FileOps | None = None, notifier: Notifier | None = None, **kw) -> Runner:
        kw.setdefault("url", exchange.ws_url)
        kw.setdefault("gamma_url", exchange.gamma_url)
        kw = {"timing": FAST, "flush_ms": 20, **kw}
        config = Config(wal_dir=tmp_path / "wal", **kw)
        daemon = Daemon(config, signals=False, notifier=notifier, **({"ops": ops} if ops else {}))
        runners.append(Runner(daemon))
        return runners[-1]

    yield _run
    for runner in runners:
        with contextlib.suppress(WalDiedError):
            await runner.stop()
