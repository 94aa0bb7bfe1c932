"""Prometheus metrics (``--metrics-addr``). Counters the hot path already keeps as plain
ints are read at scrape time by a collector, so receiving a frame costs nothing extra.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from capture.connection import Connection
from wal import WriterStats

# fsync of one batch: sub-ms on NVMe, ~10 ms on spinning disks, seconds when in trouble
FSYNC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
_COUNTER_DOCS = {
    "capture_discovery_refused": "Gamma refreshes refused: they would drop over a fifth at once",
}


class CaptureCollector(Collector):
    """Reads connection and WAL counters when Prometheus scrapes."""

    def __init__(
        self,
        connections: Callable[[], Iterable[Connection]],
        wal_stats: Callable[[], WriterStats | None],
        counters: Callable[[], dict[str, int]] | None = None,
    ) -> None:
        self.connections = connections
        self.wal_stats = wal_stats
        self.counters = counters or dict

    def collect(self) -> Iterator[Metric]:
        conns = list(self.connections())
        yield from self._per_conn(conns)
        up = GaugeMetricFamily("capture_connections_up", "Connections currently open")
        up.add_metric([], sum(1 for c in conns if c.stats.state == "up"))
        yield up
        yield self._by_reason(
            conns, "capture_reconnects", "Reconnects by reason", "reason", "reconnects"
        )
        yield self._by_reason(conns, "capture_stalls", "Watchdog firings by kind", "kind", "stalls")
        yield self._by_reason(
            conns, "capture_probes", "Liveness probes of silent connections", "result", "probes"
        )
        for name, value in self.counters().items():
            counter = CounterMetricFamily(name, _COUNTER_DOCS.get(name, name))
            counter.add_metric([], value)
            yield counter
        stats = self.wal_stats()
        if stats is not None:
            yield from _wal_metrics(stats)

    def _per_conn(self, conns: list[Connection]) -> Iterator[Metric]:
        frames = CounterMetricFamily("capture_frames", "Frames received", labels=["conn"])
        size = CounterMetricFamily("capture_received_bytes", "Bytes received", labels=["conn"])
        age = GaugeMetricFamily(
            "capture_last_frame_age_seconds", "Seconds since the last frame", labels=["conn"]
        )
        assets = GaugeMetricFamily("capture_assets", "Assets subscribed", labels=["conn"])
        now = time.monotonic()
        for conn in conns:
            label = [str(conn.id)]
            frames.add_metric(label, conn.stats.frames)
            size.add_metric(label, conn.stats.bytes)
            assets.add_metric(label, len(conn.assets))
            if conn.stats.last_frame_at is not None:
                age.add_metric(label, now - conn.stats.last_frame_at)
        yield from (frames, size, age, assets)

    @staticmethod
    def _by_reason(
        conns: list[Connection], name: str, doc: str, label: str, attr: str
    ) -> CounterMetricFamily:
        family = CounterMetricFamily(name, doc, labels=[label])
        totals: dict[str, int] = {}
        for conn in conns:
            for key, count in list(getattr(conn.stats, attr).items()):
                totals[key] = totals.get(key, 0) + count
        for key, count in sorted(totals.items()):
            family.add_metric([key], count)
        return family


def _wal_metrics(stats: WriterStats) -> Iterator[Metric]:
    counters = [
        ("capture_wal_dropped", "Records dropped: WAL buffer full", stats.dropped_total),
        ("capture_wal_segments_sealed", "Segments sealed", stats.segments_sealed),
        ("capture_wal_write_errors", "Failed WAL writes (retried)", stats.write_errors),
        ("capture_wal_written_bytes", "Compressed bytes written", stats.bytes_out),
    ]
    for name, doc, value in counters:
        counter = CounterMetricFamily(name, doc)
        counter.add_metric([], value)
        yield counter
    gauge = GaugeMetricFamily("capture_wal_buffered_bytes", "Bytes not yet durable")
    gauge.add_metric([], stats.buffered_bytes)
    yield gauge


class Metrics:
    """The registry, the fsync histogram (fed by the WAL hook) and the HTTP server."""

    def __init__(self, collector: CaptureCollector) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(collector)
        self.fsync = Histogram(
            "capture_wal_fsync_seconds",
            "Write + fdatasync of one WAL batch",
            buckets=FSYNC_BUCKETS,
            registry=self.registry,
        )
        self._server: Any = None

    def serve(self, host: str, port: int) -> None:
        self._server, _ = start_http_server(port, host, registry=self.registry)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
