"""Replicas of a shard and liveness probes, against the fake exchange: the same assets on
every replica, opened apart; a zombie replica reconnected as behind its sibling; a
quiet market probed, not reconnected."""

from __future__ import annotations

import dataclasses
import json

from capture.config import Config
from capture.daemon import Daemon
from tests.capture.daemon_fixtures import FAST, Runner
from tests.capture.helpers import wait_for, wal_records
from tests.fakes.exchange import FakeExchange


def _typed(exchange: FakeExchange, count: int) -> bool:
    conns = list(exchange.conns.values())
    return len(conns) == count and all(c.typed for c in conns)


async def test_replicas_carry_the_same_assets_and_open_at_different_times(
    tmp_path, exchange, run_daemon
):
    tokens = exchange.tokens()
    path = tmp_path / "assets.txt"
    path.write_text("\n".join(tokens[:3]) + "\n")
    timing = dataclasses.replace(FAST, replica_stagger_s=0.3)
    runner = run_daemon(assets_file=path, redundancy=2, timing=timing)
    await wait_for(lambda: _typed(exchange, 2))
    path.write_text("\n".join(tokens[1:5]) + "\n")
    runner.daemon.reload()
    await wait_for(lambda: all(set(c.assets) == set(tokens[1:5]) for c in exchange.conns.values()))
    await runner.stop()
    records = wal_records(tmp_path / "wal")
    opens = [r for r in records if r["type"] == "conn_open"]
    assert [(r["conn"], r["shard"], r["replica"]) for r in opens] == [(0, 0, 0), (1, 0, 1)]
    assert opens[1]["ts_ns"] - opens[0]["ts_ns"] > 0.15e9  # staggered by 0.3 s
    sent = {
        c: [r["text"] for r in records if r["type"] == "sent" and r["conn"] == c] for c in (0, 1)
    }
    assert sent[0] == sent[1]  # the same subscribe, then the same unsubscribe and subscribe
    assert json.loads(sent[0][0])["assets_ids"] == tokens[:3] and len(sent[0]) == 3


async def test_a_replica_stalled_alone_is_reconnected_as_behind_its_peer(
    tmp_path, exchange, run_daemon
):
    timing = dataclasses.replace(
        FAST, behind_peer_s=1.0, silence_timeout_s=60.0, replica_stagger_s=0.05
    )
    runner = run_daemon(assets=tuple(exchange.tokens()[:4]), redundancy=2, timing=timing)
    await wait_for(lambda: _typed(exchange, 2))
    zombie = min(exchange.conns)
    exchange.stall_conns.add(zombie)  # data stops on that connection only; PONGs go on
    conns = runner.daemon.connections
    await wait_for(lambda: any(c.stats.stalls["behind_peer"] for c in conns.values()))
    (stalled,) = [c for c in conns.values() if c.stats.stalls]
    (sibling,) = [c for c in conns.values() if c is not stalled]
    frames = sibling.stats.frames
    await wait_for(lambda: stalled.stats.connects == 2 and zombie not in exchange.conns)
    await wait_for(lambda: sibling.stats.frames > frames + 10)
    await runner.stop()
    assert sibling.stats.connects == 1 and not sibling.stats.stalls
    records = wal_records(tmp_path / "wal")
    (stall,) = [r for r in records if r["type"] == "stall"]
    assert stall["conn"] == stalled.id and stall["kind"] == "behind_peer"
    assert 1.0 <= stall["silent_s"] < 60.0
    closes = [r for r in records if r["type"] == "conn_close" and r["conn"] == stalled.id]
    assert "behind_peer" in closes[0]["error"]


async def test_a_quiet_market_is_probed_not_reconnected(tmp_path):
    timing = dataclasses.replace(FAST, silence_timeout_s=0.5, probe_timeout_s=2.0)
    async with FakeExchange(assets=4, rate=0.001, ping_timeout=2.0) as quiet:  # no trades
        config = Config(
            wal_dir=tmp_path / "wal",
            assets=tuple(quiet.tokens()),
            url=quiet.ws_url,
            timing=timing,
            flush_ms=20,
        )
        runner = Runner(Daemon(config, signals=False))
        await wait_for(lambda: runner.conns_up() == 1)
        conn = runner.daemon.connections[0]
        await wait_for(lambda: conn.stats.probes["answered"] >= 3)
        await runner.stop()
    assert conn.stats.connects == 1 and not conn.stats.stalls and not conn.stats.reconnects
    records = wal_records(tmp_path / "wal")
    assert [r["type"] for r in records if r["type"] in ("conn_open", "stall", "conn_close")] == [
        "conn_open",
        "conn_close",  # the shutdown
    ]
    probes = [json.loads(r["text"]) for r in records if r["type"] == "sent"][1:]
    assert [p["operation"] for p in probes[:2]] == ["unsubscribe", "subscribe"]
    books = [r for r in records if r["type"] == "frame" and '"book"' in r["text"]]
    assert len(books) >= 4  # the initial dump and a fresh book for each probe
