"""The daemon subscribes exactly what was asked, against the fake exchange's real frames:
new_market broadcasts, announced markets that close, market_resolved, failed or
incomplete Gamma listings, the drop guard."""

from __future__ import annotations

import json

import pytest

from capture import discovery
from capture.errors import DiscoveryError
from capture.wanted import ANNOUNCED_REFRESHES
from tests.capture.helpers import wait_for, wal_records
from tests.fakes.exchange import FakeExchange


async def test_one_asset_with_5_new_market_broadcasts_stays_on_one_asset(
    tmp_path, exchange, run_daemon
):
    one = exchange.tokens()[0]
    runner = run_daemon(assets=(one,))
    await wait_for(lambda: [c.typed for c in exchange.conns.values()] == [True])
    announced = [t for _ in range(5) for t in exchange.announce_market()]
    (fake,) = exchange.conns.values()
    await wait_for(lambda: sum('"new_market"' in str(m) for m in exchange.sent[fake.id]) == 5)
    await wait_for(lambda: runner.daemon.connections[0].stats.frames >= len(exchange.sent[fake.id]))
    await runner.stop()
    assert list(runner.daemon.shards.owner) == [one] and len(runner.daemon.connections) == 1
    assert list(fake.assets) == [one]
    records = wal_records(tmp_path / "wal")
    recorded = [r["text"] for r in records if r["type"] == "frame" and "new_market" in r["text"]]
    assert len(recorded) == 5  # the broadcasts are still recorded, verbatim
    assert not any(
        t in r.get("text", "") for r in records if r["type"] == "sent" for t in announced
    )


async def test_a_discovered_market_announced_then_closed_is_dropped_after_the_bounded_refreshes(
    exchange, run_daemon
):
    runner = run_daemon(discover=True, discover_interval_s=0.2)
    await wait_for(lambda: len(runner.daemon.shards.owner) == 10 and runner.conns_up() == 1)
    await wait_for(lambda: [c.typed for c in exchange.conns.values()] == [True])
    tokens = exchange.announce_market()
    exchange.close_market(tokens[0])  # closed before Gamma ever lists it as open
    requests = len(exchange.gamma_requests)
    await wait_for(lambda: set(tokens) <= set(runner.daemon.shards.owner))
    await wait_for(lambda: not set(tokens) & set(runner.daemon.shards.owner))
    assert len(exchange.gamma_requests) - requests >= ANNOUNCED_REFRESHES
    assert len(runner.daemon.shards.owner) == 10
    await wait_for(lambda: all(t not in c.assets for c in exchange.conns.values() for t in tokens))


async def test_market_resolved_unsubscribes_its_assets_after_the_grace(
    tmp_path, exchange, run_daemon
):
    tokens = exchange.tokens()
    runner = run_daemon(assets=tuple(tokens[:4]), resolved_grace_s=0.5)
    await wait_for(lambda: [c.typed for c in exchange.conns.values()] == [True])
    resolved = exchange.resolve_market(tokens[0])
    await wait_for(lambda: not set(resolved) & set(runner.daemon.shards.owner))
    await runner.stop()
    assert list(runner.daemon.shards.owner) == tokens[2:4]
    records = wal_records(tmp_path / "wal")
    frame = next(r for r in records if r["type"] == "frame" and "market_resolved" in r["text"])
    unsub = next(r for r in records if r["type"] == "sent" and "unsubscribe" in r["text"])
    assert sorted(json.loads(unsub["text"])["assets_ids"]) == sorted(resolved)
    assert unsub["ts_ns"] - frame["ts_ns"] >= 0.5e9  # late trades were kept for the grace


async def test_a_failing_gamma_page_keeps_the_previous_set(exchange, run_daemon, caplog):
    runner = run_daemon(discover=True, discover_interval_s=0.2)
    await wait_for(lambda: len(runner.daemon.shards.owner) == 10)
    exchange.gamma_fail_after = 0
    exchange.close_market(exchange.tokens()[0])
    await wait_for(lambda: "listing markets from" in caplog.text)
    assert len(runner.daemon.shards.owner) == 10
    exchange.gamma_fail_after = None
    await wait_for(lambda: len(runner.daemon.shards.owner) == 8)


async def test_the_offset_listing_reaching_its_cap_is_a_failed_refresh():
    async with FakeExchange(assets=20_200) as ex:  # 10,100 markets: past offset 10,000
        ex.gamma_keyset = False
        with pytest.raises(DiscoveryError, match="offset 10000"):
            await discovery.discover(ex.gamma_url)


async def test_dropping_more_than_a_fifth_at_once_waits_for_the_next_refresh(
    exchange, run_daemon, caplog
):
    runner = run_daemon(discover=True, discover_interval_s=0.3)
    await wait_for(lambda: len(runner.daemon.shards.owner) == 10)
    for token in exchange.tokens()[:6:2]:  # 3 markets: 6 of 10 tokens
        exchange.close_market(token)
    await wait_for(lambda: runner.daemon.wanted.refused_total == 1)
    assert len(runner.daemon.shards.owner) == 10
    assert "refused" in caplog.text
    await wait_for(lambda: len(runner.daemon.shards.owner) == 4)  # confirmed
    assert runner.daemon.wanted.refused_total == 1
