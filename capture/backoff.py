"""Reconnect delays: exponential with jitter, reset after a healthy stretch. Pure."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

INITIAL_S = 1.0  # a blip usually heals within a second
MAX_S = 60.0  # never wait longer than a minute to retry
FACTOR = 2.0
JITTER = 0.25  # +-25 % spreads many connections' retries apart
HEALTHY_S = 60.0  # a connection up this long counts as healthy: start over at INITIAL_S


@dataclass
class Backoff:
    """Call ``next_delay()`` after each failure, ``connected(now)`` on each connect and
    ``disconnected(now)`` when it ends; the clock is passed in."""

    initial_s: float = INITIAL_S
    max_s: float = MAX_S
    healthy_s: float = HEALTHY_S
    rng: random.Random = field(default_factory=random.Random)
    attempts: int = 0
    _connected_at: float | None = None

    def next_delay(self) -> float:
        base = min(self.initial_s * FACTOR**self.attempts, self.max_s)
        self.attempts += 1
        return max(0.0, base * (1 + self.rng.uniform(-JITTER, JITTER)))

    def connected(self, now: float) -> None:
        self._connected_at = now

    def disconnected(self, now: float) -> None:
        """A session ended: if it lasted ``healthy_s``, the next delay starts over."""
        if self._connected_at is not None and now - self._connected_at >= self.healthy_s:
            self.attempts = 0
        self._connected_at = None
