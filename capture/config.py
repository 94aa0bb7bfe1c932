"""The daemon's settings as one value, built by the CLI (or by tests directly)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from capture import backoff, watchdog
from capture.discovery import DEFAULT_GAMMA_URL
from capture.protocol import DEFAULT_ASSETS_PER_CONN, DEFAULT_URL

PING_INTERVAL_S = 10.0  # the server drops a connection after ~10 s without a PING
OPEN_SPACING_S = 0.1  # opening many connections at once gets HTTP 429
OPEN_TIMEOUT_S = 10.0  # a handshake slower than this is a failed attempt
CLOSE_TIMEOUT_S = 1.0  # a dead peer must not hold a reconnect or shutdown long
STATUS_INTERVAL_S = 5.0  # how fresh `capture status` is; the file lists every asset
DISCOVER_INTERVAL_S = 300.0  # new markets appear by the minute; Gamma allows far more
MAX_FRAME_BYTES = 64 << 20  # initial dumps of 500 books run to several MiB


@dataclass(frozen=True)
class Timing:
    """Intervals; the defaults follow the exchange. Tests shorten them (hidden options)."""

    ping_interval_s: float = PING_INTERVAL_S
    pong_timeout_s: float = watchdog.PONG_TIMEOUT_S
    silence_timeout_s: float = watchdog.SILENCE_TIMEOUT_S
    backoff_initial_s: float = backoff.INITIAL_S
    backoff_max_s: float = backoff.MAX_S
    healthy_s: float = backoff.HEALTHY_S
    open_spacing_s: float = OPEN_SPACING_S
    open_timeout_s: float = OPEN_TIMEOUT_S
    close_timeout_s: float = CLOSE_TIMEOUT_S
    status_interval_s: float = STATUS_INTERVAL_S


@dataclass(frozen=True)
class Config:
    wal_dir: Path
    assets: tuple[str, ...] = ()
    assets_file: Path | None = None
    discover: bool = False
    gamma_url: str = DEFAULT_GAMMA_URL
    discover_interval_s: float = DISCOVER_INTERVAL_S
    url: str = DEFAULT_URL
    max_assets_per_conn: int = DEFAULT_ASSETS_PER_CONN
    custom_features: bool = True
    flush_ms: int | None = None
    rotate_s: float | None = None
    rotate_bytes: int | None = None
    max_buffer_bytes: int = 256 << 20
    metrics_addr: tuple[str, int] | None = None
    timing: Timing = field(default_factory=Timing)
