"""The ``capture`` command: ``capture run`` (the daemon) and ``capture status``.

Every option can also be set by an environment variable ``CAPTURE_<NAME>`` (e.g.
``CAPTURE_WAL_DIR``). Options marked hidden exist for tests and benchmarks only: they
shorten the exchange's intervals.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import click
from websockets.exceptions import InvalidURI
from websockets.uri import parse_uri

from capture import logs
from capture.config import (
    BEHIND_PEER_S,
    MAX_REDUNDANCY,
    MIN_BUFFER_BYTES,
    PROBE_TIMEOUT_S,
    REPLICA_STAGGER_S,
    STOP_TIMEOUT_S,
    TICK_S,
    Config,
    Timing,
    buffer_too_small,
)
from capture.daemon import Daemon
from capture.discovery import DEFAULT_GAMMA_URL
from capture.errors import CaptureError
from capture.protocol import DEFAULT_ASSETS_PER_CONN, DEFAULT_URL, MAX_ASSETS_PER_CONN
from capture.status import read_status, render
from capture.wanted import RESOLVED_GRACE_S
from wal import WalError
from wal.policy import DEFAULT_FLUSH_MS, DEFAULT_ROTATE_BYTES, DEFAULT_ROTATE_S


def _opt(*names: str, **kwargs: Any) -> Any:
    """An option whose env var is CAPTURE_<NAME>, shown in --help."""
    env = "CAPTURE_" + names[0].lstrip("-").split("/")[0].replace("-", "_").upper()
    return click.option(*names, envvar=env, show_envvar=True, **kwargs)


def _hidden(name: str, default: float) -> Any:
    return _opt(name, type=click.FloatRange(min=0.01), default=default, hidden=True)


def _metrics_addr(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if not value:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:9464)")
    return (host or "0.0.0.0", int(port))


def _buffer_mb(ctx: click.Context, param: click.Parameter, value: int) -> int:
    if value << 20 < MIN_BUFFER_BYTES:
        raise click.BadParameter(buffer_too_small(value << 20))
    return value


def _ws_url(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        parse_uri(value)
    except InvalidURI as exc:
        raise click.BadParameter(str(exc)) from None
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Record Polymarket's market WebSocket into a write-ahead log."""


@main.command()
@_opt(
    "--wal-dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="WAL directory (created if missing; one daemon per directory).",
)
@_opt("--asset", "assets", multiple=True, help="Token id to subscribe (repeatable).")
@_opt(
    "--assets-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File of token ids, one per line, '#' comments; re-read on SIGHUP.",
)
@_opt("--discover/--no-discover", default=False, help="Subscribe every open market from Gamma.")
@_opt("--gamma-url", default=DEFAULT_GAMMA_URL, show_default=True, help="Gamma API base URL.")
@_opt(
    "--discover-interval",
    type=click.FloatRange(min=1),
    default=300.0,
    show_default=True,
    help="Seconds between Gamma refreshes.",
)
@_opt(
    "--url",
    default=DEFAULT_URL,
    show_default=True,
    callback=_ws_url,
    help="Market channel WebSocket URL.",
)
@_opt(
    "--max-assets-per-conn",
    type=click.IntRange(1, MAX_ASSETS_PER_CONN),
    default=DEFAULT_ASSETS_PER_CONN,
    show_default=True,
    help="Assets per connection.",
)
@_opt(
    "--custom-features/--no-custom-features",
    default=True,
    show_default=True,
    help="Ask for best_bid_ask, new_market and market_resolved events.",
)
@_opt(
    "--follow-new-markets/--no-follow-new-markets",
    default=False,
    show_default=True,
    help="Subscribe the assets of new_market events (broadcast to every connection). "
    "Always on with --discover; off, --asset/--assets-file capture only what they list.",
)
@_opt(
    "--resolved-grace",
    type=click.FloatRange(min=0),
    default=RESOLVED_GRACE_S,
    show_default=True,
    help="Seconds after a market_resolved event before its assets are unsubscribed.",
)
@_opt(
    "--redundancy",
    type=click.IntRange(1, MAX_REDUNDANCY),
    default=1,
    show_default=True,
    help="Connections per shard, each carrying the same assets, opened apart: a dropped "
    "or stalled one loses nothing its sibling got.",
)
@_opt(
    "--flush-ms",
    type=click.IntRange(min=0),
    default=DEFAULT_FLUSH_MS,
    show_default=True,
    help="Flush (and fsync) a batch at most this long after its first record.",
)
@_opt(
    "--rotate-seconds",
    type=click.FloatRange(min=1),
    default=DEFAULT_ROTATE_S,
    show_default=True,
    help="Seal a segment after this many seconds.",
)
@_opt(
    "--rotate-bytes",
    type=click.IntRange(min=1 << 16),
    default=DEFAULT_ROTATE_BYTES,
    show_default=True,
    help="Seal a segment at this many compressed bytes.",
)
@_opt(
    "--max-buffer-mb",
    type=int,  # the callback checks the minimum, with the reason
    default=256,
    show_default=True,
    callback=_buffer_mb,
    help="Memory for records not yet on disk; past it frames are dropped (and counted). "
    f"At least {MIN_BUFFER_BYTES >> 20}; the largest message accepted is the smaller of "
    "64 MiB and half of it.",
)
@_opt(
    "--silence-timeout",
    type=click.FloatRange(min=0.01),
    default=120.0,
    show_default=True,
    help="After this many seconds without data, probe a connection with assets (a PING "
    "whose PONG must come back); it is reconnected only when the probe is not answered.",
)
@_opt("--metrics-addr", callback=_metrics_addr, help="Serve Prometheus metrics on HOST:PORT.")
@_opt(
    "--stop-timeout",
    type=click.FloatRange(min=0.1),
    default=STOP_TIMEOUT_S,
    show_default=True,
    help="Seconds from SIGTERM to exit: drain, write out the backlog, seal. Records not "
    "written by then are lost: exit 1 with a CRITICAL line saying how many.",
)
@_opt(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
    help="Any case: CAPTURE_LOG_LEVEL=INFO works.",
)
@_opt(
    "--log-format",
    type=click.Choice(["text", "json"], case_sensitive=False),
    default="text",
    show_default=True,
)
@_hidden("--ping-interval", 10.0)
@_hidden("--pong-timeout", 30.0)
@_hidden("--backoff-initial", 1.0)
@_hidden("--backoff-max", 60.0)
@_hidden("--status-interval", 5.0)
@_hidden("--open-spacing", 0.1)
@_hidden("--ready-wait", 30.0)
@_hidden("--tick", TICK_S)
@_hidden("--behind-peer-timeout", BEHIND_PEER_S)
@_hidden("--probe-timeout", PROBE_TIMEOUT_S)
@_hidden("--replica-stagger", REPLICA_STAGGER_S)
def run(**o: Any) -> None:
    """Run the capture daemon until SIGTERM/SIGINT (SIGHUP re-reads --assets-file)."""
    if not (o["assets"] or o["assets_file"] or o["discover"]):
        raise click.UsageError("give assets: --asset ID, --assets-file FILE and/or --discover")
    timing = Timing(
        ping_interval_s=o["ping_interval"],
        pong_timeout_s=o["pong_timeout"],
        silence_timeout_s=o["silence_timeout"],
        backoff_initial_s=o["backoff_initial"],
        backoff_max_s=max(o["backoff_max"], o["backoff_initial"]),
        status_interval_s=o["status_interval"],
        open_spacing_s=o["open_spacing"],
        ready_wait_s=o["ready_wait"],
        tick_s=o["tick"],
        behind_peer_s=o["behind_peer_timeout"],
        probe_timeout_s=o["probe_timeout"],
        replica_stagger_s=o["replica_stagger"],
    )
    config = Config(
        wal_dir=o["wal_dir"],
        assets=tuple(o["assets"]),
        assets_file=o["assets_file"],
        discover=o["discover"],
        gamma_url=o["gamma_url"],
        discover_interval_s=o["discover_interval"],
        url=o["url"],
        max_assets_per_conn=o["max_assets_per_conn"],
        custom_features=o["custom_features"],
        follow_new_markets=o["follow_new_markets"],
        resolved_grace_s=o["resolved_grace"],
        redundancy=o["redundancy"],
        flush_ms=o["flush_ms"],
        rotate_s=o["rotate_seconds"],
        rotate_bytes=o["rotate_bytes"],
        max_buffer_bytes=o["max_buffer_mb"] << 20,
        metrics_addr=o["metrics_addr"],
        stop_timeout_s=o["stop_timeout"],
        timing=timing,
    )
    logs.setup(o["log_level"].lower(), o["log_format"].lower())
    try:
        asyncio.run(Daemon(config).run())
    except (CaptureError, WalError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@_opt(
    "--wal-dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="WAL directory of the daemon to ask.",
)
@_opt("--json", "as_json", is_flag=True, help="Print the status document as JSON.")
def status(wal_dir: Path, as_json: bool) -> None:
    """Show what the running daemon is doing (exit 1 when it is not running)."""
    try:
        doc = read_status(wal_dir, time.time_ns())
    except CaptureError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        json.dump(doc, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        click.echo(render(doc))
