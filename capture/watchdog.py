"""Per-connection watchdogs as a pure decision: given the times, has one fired?"""

from __future__ import annotations

from dataclasses import dataclass

PONG_TIMEOUT_S = 30.0  # the official SDKs call a connection dead after 30 s without PONG
SILENCE_TIMEOUT_S = 120.0  # reported: data can stop for hours while PONGs keep coming

NO_PONG = "no_pong"
NO_DATA = "no_data"


@dataclass(frozen=True)
class Stall:
    kind: str  # NO_PONG or NO_DATA
    silent_s: float


@dataclass
class Watchdog:
    """Monotonic times of the session start, the last PONG and the last data frame."""

    started: float
    pong_timeout_s: float = PONG_TIMEOUT_S
    silence_timeout_s: float = SILENCE_TIMEOUT_S
    last_pong: float | None = None
    last_data: float | None = None

    def check(self, now: float, has_assets: bool) -> Stall | None:
        pong_age = now - (self.last_pong if self.last_pong is not None else self.started)
        if pong_age >= self.pong_timeout_s:
            return Stall(NO_PONG, round(pong_age, 3))
        if has_assets:
            data_age = now - (self.last_data if self.last_data is not None else self.started)
            if data_age >= self.silence_timeout_s:
                return Stall(NO_DATA, round(data_age, 3))
        return None
