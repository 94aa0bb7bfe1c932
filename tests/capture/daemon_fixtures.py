"""Short intervals and a runner for daemons run in-process against the fake exchange."""

from __future__ import annotations

import asyncio

from capture.config import Timing
from capture.daemon import Daemon
from tests.timeouts import TIMEOUT_S

FAST = Timing(
    ping_interval_s=0.2,
    pong_timeout_s=2.0,
    silence_timeout_s=5.0,
    backoff_initial_s=0.05,
    backoff_max_s=0.2,
    open_spacing_s=0.01,
    close_timeout_s=0.5,
    tick_s=0.1,
    probe_timeout_s=0.5,
    status_interval_s=0.2,
)


class Runner:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.task = asyncio.create_task(daemon.run())

    def conns_up(self) -> int:
        return sum(1 for c in self.daemon.connections.values() if c.stats.state == "up")

    async def stop(self) -> None:
        if not self.task.done():
            self.daemon.request_stop()
        await asyncio.wait_for(self.task, TIMEOUT_S)
