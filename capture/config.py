"""The daemon's settings as one value, built by the CLI (or by tests directly)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from capture import backoff, watchdog
from capture.discovery import DEFAULT_GAMMA_URL
from capture.errors import ConfigError
from capture.protocol import DEFAULT_ASSETS_PER_CONN, DEFAULT_URL
from capture.wanted import RESOLVED_GRACE_S

PING_INTERVAL_S = 10.0  # the server drops a connection after ~10 s without a PING
OPEN_SPACING_S = 0.1  # opening many connections at once gets HTTP 429
OPEN_TIMEOUT_S = 10.0  # a handshake slower than this is a failed attempt
CLOSE_TIMEOUT_S = 1.0  # a dead peer must not hold a reconnect long
DRAIN_TIMEOUT_S = 2.0  # at shutdown: how long to keep recording until the server closes
STATUS_INTERVAL_S = 5.0  # how fresh `capture status` is; the file lists every asset
DISCOVER_INTERVAL_S = 300.0  # new markets appear by the minute; Gamma allows far more
MAX_FRAME_BYTES = 64 << 20  # initial dumps of 500 books run to several MiB
MIN_FRAME_BYTES = 16 << 20  # the receive limit is never below this (a big initial dump)
# A frame must fit in the WAL buffer with room to spare, else it is always dropped:
# the receive limit is at most half the buffer, so the buffer is at least 32 MiB.
BUFFER_PER_FRAME = 2
MIN_BUFFER_BYTES = MIN_FRAME_BYTES * BUFFER_PER_FRAME
# Of --max-buffer-mb, what the WAL writer's queue may not use, so that the bound holds for
# all the memory unwritten records take (RSS): the batch being written, encoded and
# compressed (~2 MiB), and websockets' parse of one 256 KiB socket read, which for
# PONG-sized frames is ~44k frame objects at once (8.2 MiB measured with tracemalloc).
RECEIVE_RESERVE_BYTES = 12 << 20
READY_WAIT_S = 30.0  # READY=1 waits at most this for Gamma, then for the first connects
# From SIGTERM to exit: draining the connections, then writing out the backlog and
# sealing; inside the unit's TimeoutStopSec=15, so that systemd never SIGKILLs a writer.
STOP_TIMEOUT_S = 12.0
TICK_S = 1.0  # how often a connection's watchdogs look; their timeouts are 5 s and up
# A replica without data while its sibling gets some is a zombie long before the silence
# timeout; but the sibling's frames take a moment to arrive here too.
BEHIND_PEER_S = 15.0
PROBE_TIMEOUT_S = 5.0  # a resubscribe's fresh book comes within a second when alive
# Replicas of a shard open this far apart, so that one handshake storm or server restart
# does not take them all at the same moment.
REPLICA_STAGGER_S = 2.0
MAX_REDUNDANCY = 3  # a third copy of every connection is the most that pays


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
    drain_timeout_s: float = DRAIN_TIMEOUT_S
    status_interval_s: float = STATUS_INTERVAL_S
    ready_wait_s: float = READY_WAIT_S
    tick_s: float = TICK_S
    behind_peer_s: float = BEHIND_PEER_S
    probe_timeout_s: float = PROBE_TIMEOUT_S
    replica_stagger_s: float = REPLICA_STAGGER_S


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
    follow_new_markets: bool = False  # --discover follows them in any case
    resolved_grace_s: float = RESOLVED_GRACE_S
    redundancy: int = 1
    flush_ms: int | None = None
    rotate_s: float | None = None
    rotate_bytes: int | None = None
    max_buffer_bytes: int = 256 << 20
    metrics_addr: tuple[str, int] | None = None
    stop_timeout_s: float = STOP_TIMEOUT_S
    timing: Timing = field(default_factory=Timing)

    def __post_init__(self) -> None:
        if self.max_buffer_bytes < MIN_BUFFER_BYTES:
            raise ConfigError(buffer_too_small(self.max_buffer_bytes))
        if not 1 <= self.redundancy <= MAX_REDUNDANCY:
            raise ConfigError(
                f"redundancy {self.redundancy} is out of range: use 1 to {MAX_REDUNDANCY}"
            )

    @property
    def follows_new_markets(self) -> bool:
        """``new_market`` is broadcast to all: follow it when capturing everything or asked."""
        return self.discover or self.follow_new_markets

    @property
    def wal_queue_bytes(self) -> int:
        """The WAL writer's own bound: the buffer less what receiving and writing hold."""
        return self.max_buffer_bytes - RECEIVE_RESERVE_BYTES

    @property
    def max_frame_bytes(self) -> int:
        """The largest message accepted: 64 MiB, or half the WAL buffer when that is less
        (never below 16 MiB), so that a frame received always fits in the buffer."""
        return max(MIN_FRAME_BYTES, min(MAX_FRAME_BYTES, self.max_buffer_bytes // BUFFER_PER_FRAME))


def buffer_too_small(max_buffer_bytes: int) -> str:
    return (
        f"--max-buffer-mb {max_buffer_bytes >> 20} is too small: the buffer must hold "
        f"{BUFFER_PER_FRAME}x the largest message accepted, which is at least "
        f"{MIN_FRAME_BYTES >> 20} MiB (initial dumps run to several MiB); "
        f"use --max-buffer-mb {MIN_BUFFER_BYTES >> 20} or more"
    )
