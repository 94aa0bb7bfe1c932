"""The daemon: sources of assets, sharded connections, the WAL, signals, status, metrics.

Runs in one asyncio loop; the WAL writer has its own thread. ``run()`` returns when a
stop was requested (SIGTERM/SIGINT or ``request_stop``) and everything is sealed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from capture import discovery
from capture import status as status_doc
from capture.assets import parse_assets_file
from capture.config import MAX_FRAME_BYTES, Config
from capture.connection import Connection, OpenGate
from capture.errors import ConfigError, DiscoveryError, StopTimeoutError, WalDiedError
from capture.metrics import CaptureCollector, Metrics
from capture.notify import Notifier
from capture.shard import Shards
from capture.signals import handled_signals
from capture.status import write_status
from capture.wanted import Wanted
from wal import FileOps, Hooks, Policy, WalError, WalFatalError, WalWriteError, WalWriter
from wal.fsutil import REAL_OPS
from wal.policy import DEFAULT_BATCH_BYTES

log = logging.getLogger(__name__)

WRITER_NAME = "polymarket-capture 0.1.0"
# Of --stop-timeout: the connections' drain (Timing.drain_timeout_s, 2 s) plus this
# margin; all the rest is for writing out the backlog and sealing the segment.
STOP_MARGIN_S = 0.25
MIN_SEAL_S = 0.1  # even past the deadline the writer gets one last try
DISCOVER_RETRY_S = 30.0  # a failed discovery is retried sooner than the full interval


def read_assets_file(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read assets file {path}: {exc.strerror or exc}") from None
    return parse_assets_file(text, str(path))


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        ops: FileOps = REAL_OPS,
        notifier: Notifier | None = None,
        signals: bool = True,
    ) -> None:
        self.config = config
        self.ops = ops
        self.notifier = notifier or Notifier()
        self.signals = signals  # tests running a daemon in-process leave signals alone
        self.shards = Shards(config.max_assets_per_conn)
        self.connections: dict[int, Connection] = {}
        self.replicas: dict[int, list[Connection]] = {}  # by shard, replica 0 first
        self.writer: WalWriter | None = None
        self._market_log = discovery.MarketLog(self._append)  # meta records of Gamma markets
        self.metrics: Metrics | None = None
        self.started_ns = time.time_ns()
        self.wanted = Wanted(
            config.assets,
            follow_new=config.follows_new_markets,
            resolved_grace_s=config.resolved_grace_s,
        )
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._background: list[asyncio.Task[Any]] = []
        self._stop = asyncio.Event()
        self._first_discovery = asyncio.Event()  # set after the first Gamma attempt
        self.fatal: str | None = None  # the WAL writer died: the daemon exits with status 1
        self._gate = OpenGate(config.timing.open_spacing_s)
        self._last_frames = (time.monotonic(), 0)
        self._state = "starting"
        self._stop_at: float | None = None  # monotonic time of the first stop request
        self.lost = 0  # records a timed-out stop could not write

    # ----- sources and reconciling -----

    def desired(self) -> list[str]:
        return self.wanted.desired()

    def reconcile(self) -> None:
        """Subscribe what is wanted and not held, unsubscribe what is held and not wanted.
        Every replica of a shard gets the same subscribes and unsubscribes."""
        if self._state in ("stopping", "stopped", "failed"):
            return  # no new connections once the shutdown has begun
        wanted = self.desired()
        wanted_set = set(wanted)
        gone = [a for a in self.shards.owner if a not in wanted_set]
        for shard, assets in self.shards.remove(gone).remove.items():
            for conn in self.replicas[shard]:
                conn.remove(assets)
        plan = self.shards.add(wanted)
        for shard, assets in plan.add.items():
            for conn in self.replicas[shard]:
                conn.add(assets)
        for shard, assets in plan.open.items():
            self._open(shard, assets)
        added = sum(map(len, plan.add.values())) + sum(map(len, plan.open.values()))
        if added or gone:
            log.info(
                "subscriptions: +%d -%d, %d assets on %d shards x %d replicas (%d new)",
                added,
                len(gone),
                len(self.shards.owner),
                len(self.replicas),
                self.config.redundancy,
                len(plan.open),
            )

    def _open(self, shard: int, assets: list[str]) -> None:
        """The shard's replicas: connection ids ``shard * N + replica``, replica r opened
        r staggers after replica 0, so that they do not drop (or reconnect) together."""
        assert self.writer is not None
        siblings: list[Connection] = []
        self.replicas[shard] = siblings
        redundancy = self.config.redundancy
        for replica in range(redundancy):
            conn_id = shard * redundancy + replica
            conn = Connection(
                conn_id,
                self.config.url,
                assets,
                sink=self.writer,
                gate=self._gate,
                timing=self.config.timing,
                custom_features=self.config.custom_features,
                on_new_market=self.on_new_market if self.config.follows_new_markets else None,
                on_resolved=self.on_resolved,
                on_wal_fatal=self._on_wal_fatal,
                max_frame_bytes=self.config.max_frame_bytes,
                shard=shard,
                replica=replica,
                siblings=siblings,
            )
            siblings.append(conn)
            self.connections[conn_id] = conn
            delay = replica * self.config.timing.replica_stagger_s
            self._tasks[conn_id] = asyncio.create_task(conn.run(delay), name=f"conn-{conn_id}")

    def on_new_market(self, assets: list[str]) -> None:
        """A ``new_market`` (broadcast to every connection): followed only when capturing
        everything or asked to (``--follow-new-markets``); its frame is recorded anyway."""
        fresh = self.wanted.announce(assets)
        if fresh:
            log.info("new_market: subscribing %d new assets", len(fresh))
            self.reconcile()

    def on_resolved(self, assets: list[str]) -> None:
        """``market_resolved``: unsubscribe its assets once ``--resolved-grace`` is over."""
        started = self.wanted.resolve(assets, time.monotonic())
        if started:
            grace = self.config.resolved_grace_s
            log.info("market_resolved: unsubscribing %d assets in %.0fs", len(started), grace)
            asyncio.get_running_loop().call_later(grace, self._expire_resolved)

    def _expire_resolved(self) -> None:
        done = self.wanted.expire(time.monotonic())
        if done:
            log.info("market_resolved: %d assets past their grace", len(done))
            self.reconcile()

    def reload(self) -> None:
        """SIGHUP: read the assets file again; on error keep the previous list."""
        if self._stop.is_set():
            log.info("SIGHUP while stopping: ignored")
            return
        if self.config.assets_file is None:
            log.info("SIGHUP: no --assets-file to reload")
            return
        try:
            self.wanted.file = read_assets_file(self.config.assets_file)
        except ConfigError as exc:
            log.error("SIGHUP: %s; keeping the previous list", exc)
            return
        log.info("SIGHUP: %d assets in %s", len(self.wanted.file), self.config.assets_file)
        self.reconcile()

    async def refresh_discovery(self) -> bool:
        """One Gamma listing. False when it failed or was incomplete (the previous list
        stays); a listing that would drop too much at once is refused (see ``Wanted``)."""
        try:
            tokens = await discovery.discover(self.config.gamma_url, self._record_markets)
        except DiscoveryError as exc:
            log.error("%s", exc)
            return False
        result = self.wanted.listed(tokens)
        if not result.applied:
            log.error(
                "discovery: %d tokens of open markets would drop %d of %d assets at once; "
                "refused (more than a fifth), unless the next refresh confirms it",
                len(tokens),
                result.dropped,
                len(self.shards.owner),
            )
            return True
        confirmed = " (confirming the refused drop)" if result.confirmed else ""
        log.info("discovery: %d tokens of open markets%s", len(tokens), confirmed)
        self.reconcile()
        return True

    def _append(self, record: dict[str, Any]) -> int:
        assert self.writer is not None
        return self.writer.append(record)

    def _record_markets(self, source: str, markets: object) -> None:
        """Gamma's market objects into the WAL as ``meta`` records, new or changed only
        (called from the discovery thread; the writer takes records from any thread)."""
        if self.writer is not None:
            with contextlib.suppress(WalError):  # closing or dead: the loop reports it
                self._market_log.observe(source, markets)

    # ----- running -----

    def request_stop(self) -> None:
        if self._stop_at is None:
            self._stop_at = time.monotonic()
        self._stop.set()

    async def run(self) -> None:
        """Open the WAL, connect, record until stopped, then seal. WAL errors propagate."""
        cfg = self.config
        if cfg.assets_file is not None:
            self.wanted.file = read_assets_file(cfg.assets_file)
        if cfg.max_frame_bytes < MAX_FRAME_BYTES:
            log.info(
                "messages larger than %d MiB are refused (half of --max-buffer-mb %d)",
                cfg.max_frame_bytes >> 20,
                cfg.max_buffer_bytes >> 20,
            )
        # wal's recovery logs each segment it recovered (crash recovery: ...)
        self.writer = await asyncio.to_thread(self._open_writer)
        # The handlers stay installed through the shutdown too: a second SIGTERM or a
        # SIGHUP while connections drain must not kill the process before the seal.
        with handled_signals(self.request_stop, self.reload, enabled=self.signals):
            try:
                self._start_metrics()
                await self._main()
            finally:
                await self._shutdown()
        if self.fatal is not None:
            raise WalDiedError(f"WAL writer died: {self.fatal}")
        if self.lost:
            raise StopTimeoutError(
                f"stop timed out after {self.config.stop_timeout_s:g}s (--stop-timeout): "
                f"{self.lost} records were not written; the disk is slow or failing"
            )

    def _open_writer(self) -> WalWriter:
        cfg = self.config
        defaults = Policy()
        policy = Policy(
            flush_ms=cfg.flush_ms if cfg.flush_ms is not None else defaults.flush_ms,
            batch_bytes=min(DEFAULT_BATCH_BYTES, cfg.wal_queue_bytes),
            rotate_s=cfg.rotate_s or defaults.rotate_s,
            rotate_bytes=cfg.rotate_bytes or defaults.rotate_bytes,
            max_buffer_bytes=cfg.wal_queue_bytes,
        )
        hooks = Hooks(on_error=self._wal_error)
        return WalWriter.open(cfg.wal_dir, policy, writer=WRITER_NAME, hooks=hooks, ops=self.ops)

    def _wal_error(self, exc: WalWriteError) -> None:
        log.error("WAL write error (data kept in memory, retrying): %s", exc)

    def _start_metrics(self) -> None:
        addr = self.config.metrics_addr
        if addr is None:
            return
        collector = CaptureCollector(
            lambda: list(self.connections.values()),
            lambda: self.writer.stats if self.writer else None,
            lambda: {"capture_discovery_refused": self.wanted.refused_total},
        )
        self.metrics = Metrics(collector)
        self.metrics.serve(*addr)
        assert self.writer is not None
        self.writer.hooks = Hooks(on_fsync=self.metrics.fsync.observe, on_error=self._wal_error)
        log.info("metrics on http://%s:%d/metrics", *addr)

    async def _main(self) -> None:
        self.reconcile()
        self._state = "running"
        known_at_start = bool(self.connections)
        if self.config.discover:
            self._spawn(self._discovery_loop())
        else:
            self._first_discovery.set()
        self._spawn(self._ready(wait_for_discovery=not known_at_start))
        self._spawn(self._status_loop())
        if self.notifier.watchdog_interval_s is not None:
            self._spawn(self._watchdog_loop(self.notifier.watchdog_interval_s))
        await self._stop.wait()

    def _spawn(self, coro: Any) -> None:
        self._background.append(asyncio.create_task(coro))

    async def _ready(self, *, wait_for_discovery: bool) -> None:
        """READY=1 once the WAL is open and the first connections have been tried.

        The assets known at start (--asset, --assets-file) do not wait for Gamma: a slow
        listing must not hold READY past systemd's TimeoutStartSec. With --discover only,
        READY waits for the first discovery attempt, at most ``ready_wait_s``; then for
        each connection's first connect (or failure), again at most ``ready_wait_s``.
        """
        wait_s = self.config.timing.ready_wait_s
        if wait_for_discovery:
            try:
                await asyncio.wait_for(self._first_discovery.wait(), wait_s)
            except TimeoutError:
                log.warning("Gamma has not answered within %.0fs; ready without it", wait_s)
        if not self.connections:
            log.warning("no assets to subscribe yet; waiting for a discovery or SIGHUP")
        firsts = [c.first_attempt.wait() for c in list(self.connections.values())]
        if firsts:
            try:
                await asyncio.wait_for(asyncio.gather(*firsts), wait_s)
            except TimeoutError:
                log.warning("some connections have not been tried within %.0fs", wait_s)
        if self.fatal is not None:
            return
        up = sum(1 for c in self.connections.values() if c.stats.state == "up")
        message = f"{len(self.shards.owner)} assets, {up}/{len(self.connections)} connections up"
        log.info("ready: %s", message)
        self.notifier.ready(message)

    async def _status_loop(self) -> None:
        while True:
            self._check_writer()
            await self._write_status()
            await asyncio.sleep(self.config.timing.status_interval_s)

    def _check_writer(self) -> bool:
        """False (and the daemon stopping) once the WAL writer thread has died."""
        if self.fatal is None and self.writer is not None and self.writer.fatal_error:
            self._on_wal_fatal(self.writer.fatal_error)
        return self.fatal is None

    def _on_wal_fatal(self, exc: WalFatalError | str) -> None:
        """Nothing received can be kept any more: stop pinging systemd's watchdog, stop
        receiving, and exit with status 1 so that systemd restarts capture."""
        if self.fatal is not None:
            return
        writer_error = self.writer.fatal_error if self.writer is not None else None
        self.fatal = writer_error or str(exc)
        log.critical(
            "WAL writer died: %s; exiting so that systemd restarts capture and recovery "
            "seals the open segment",
            self.fatal,
        )
        self._state = "failed"
        self.request_stop()

    async def _write_status(self) -> None:
        try:
            await asyncio.to_thread(write_status, self.config.wal_dir, self.status())
        except OSError as exc:
            log.error("cannot write status file: %s", exc)

    async def _discovery_loop(self) -> None:
        """Discover now (without holding up connections or a stop), then every interval."""
        interval = self.config.discover_interval_s
        while True:
            try:
                ok = await self.refresh_discovery()
            except Exception:  # a bug or an unforeseen error must not end discovery for good
                log.exception("discovery failed unexpectedly; keeping the previous list")
                ok = False
            self._first_discovery.set()
            if not ok:
                log.info("discovery: retrying in %.0fs", min(interval, DISCOVER_RETRY_S))
            await asyncio.sleep(interval if ok else min(interval, DISCOVER_RETRY_S))

    async def _watchdog_loop(self, interval: float) -> None:
        while self._check_writer():  # a dead WAL writer gets no more pings
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    def _left_s(self) -> float:
        """Seconds left of --stop-timeout since the stop was requested."""
        if self._stop_at is None:
            self._stop_at = time.monotonic()
        return self._stop_at + self.config.stop_timeout_s - time.monotonic()

    async def _shutdown(self) -> None:
        """Close the connections, recording until each server has closed (at most the
        drain timeout), then write out and seal the segment, all within --stop-timeout.
        When the writer cannot finish in time, the records it could not write are lost:
        a CRITICAL line says how many, the WAL lock stays held while the writer thread
        lives, and ``run`` exits 1."""
        self._check_writer()
        if self.fatal is None:
            self._state = "stopping"
        self.notifier.stopping()
        log.info("stopping: closing %d connections", len(self.connections))
        for task in self._background:
            task.cancel()
        stops = [asyncio.create_task(c.stop()) for c in self.connections.values()]
        tasks = [*stops, *self._tasks.values()]
        if tasks:
            limit = self.config.timing.drain_timeout_s + STOP_MARGIN_S
            _, pending = await asyncio.wait(tasks, timeout=max(min(limit, self._left_s()), 0))
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.writer is not None:
            sealed = await asyncio.to_thread(self.writer.close, max(self._left_s(), MIN_SEAL_S))
            if not sealed:
                log.error("the open segment could not be sealed; recovery seals it next start")
            self.lost = self.writer.unwritten
            if self.lost:
                log.critical(
                    "stop timed out after %gs (--stop-timeout): %d records were not "
                    "written and are lost; the open segment is sealed by recovery at the "
                    "next start",
                    self.config.stop_timeout_s,
                    self.lost,
                )
        self._check_writer()
        self._state = "failed" if self.fatal is not None or self.lost else "stopped"
        await self._write_status()
        if self.metrics is not None:
            await asyncio.to_thread(self.metrics.close)
        log.info("stopped")

    # ----- status -----

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        conns = list(self.connections.values())
        frames = sum(c.stats.frames for c in conns)
        then, before = self._last_frames
        rate = (frames - before) / (now - then) if now > then else 0.0
        self._last_frames = (now, frames)
        writer = self.writer
        return status_doc.build(
            state=self._state,
            started_ns=self.started_ns,
            interval_s=self.config.timing.status_interval_s,
            url=self.config.url,
            assets=len(self.shards.owner),
            connections=conns,
            frames_per_s=rate,
            wal_stats=writer.stats if writer is not None else None,
            fatal_error=(self.fatal or writer.fatal_error) if writer is not None else None,
            now=now,
        )
