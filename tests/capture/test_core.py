"""The connection's sans-I/O core, fed events with a hand-turned clock: no sockets, no
sleeps."""

from __future__ import annotations

import json

from capture import protocol
from capture.config import Timing
from capture.core import PEER_LEAD_FRAMES, ConnectionCore, State

TIMING = Timing(
    ping_interval_s=10.0,
    pong_timeout_s=30.0,
    silence_timeout_s=120.0,
    behind_peer_s=15.0,
    probe_timeout_s=5.0,
    tick_s=1.0,
)
ASSETS = ["111", "222"]


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time_ns(self) -> int:
        return int(self.now * 1e9)


def make(**kw) -> tuple[ConnectionCore, ManualClock]:
    clock = ManualClock()
    core = ConnectionCore(7, "ws://x/ws/market", ASSETS, timing=TIMING, clock=clock, **kw)
    return core, clock


def up(**kw) -> tuple[ConnectionCore, ManualClock]:
    core, clock = make(**kw)
    core.opened()
    core.records_out()
    core.tick()
    core.data_to_send()
    return core, clock


def run_for(core: ConnectionCore, clock: ManualClock, seconds: float, **tick) -> None:
    """Tick once a second for ``seconds``, answering every PING with a PONG."""
    for _ in range(int(seconds)):
        clock.now += 1.0
        core.tick(**tick)
        if protocol.PING_TEXT in core.data_to_send():
            core.control(protocol.FrameKind.PONG)
        if core.close_request is not None:
            return


def kinds(core: ConnectionCore) -> list[str]:
    return [r["type"] for r in core.records_out()]


def test_open_records_conn_open_with_shard_and_replica_then_the_subscribe():
    core, _ = make(shard=3, replica=1)
    text = core.opened()
    opened, sent = core.records_out()
    assert opened["type"] == "conn_open" and (opened["shard"], opened["replica"]) == (3, 1)
    assert sent == {"type": "sent", "ts_ns": sent["ts_ns"], "conn": 7, "text": text}
    assert json.loads(text)["assets_ids"] == ASSETS and core.state is State.UP


def test_a_single_connection_is_shard_itself_replica_0():
    core, _ = make()
    core.opened()
    opened = core.records_out()[0]
    assert (opened["shard"], opened["replica"]) == (7, 0)


def test_no_ping_before_open_and_the_first_tick_after_open_pings():
    core, _ = make()
    core.tick()
    assert core.data_to_send() == []
    core.opened()
    assert core.data_to_send() == []  # the driver sends the subscribe itself, first
    core.tick()
    assert core.data_to_send() == [protocol.PING_TEXT]


def test_pings_follow_the_interval():
    core, clock = up()
    pings = 0
    for _ in range(30):
        clock.now += 1.0
        core.tick()
        pings += core.data_to_send().count(protocol.PING_TEXT)
    assert pings == 3


def test_no_pong_for_the_timeout_fires_a_stall_and_asks_to_close():
    core, clock = up()
    clock.now += 30.0
    core.tick()
    stall = core.records_out()[-1]
    assert stall["type"] == "stall" and stall["kind"] == "no_pong" and stall["silent_s"] == 30.0
    assert core.close_request == (1000, "stall: no_pong")


def test_silence_sends_a_probe_and_a_fresh_book_keeps_the_connection():
    core, clock = up()
    run_for(core, clock, 120)
    unsub, sub = core.records_out()[-2:]
    assert json.loads(unsub["text"]) == {"operation": "unsubscribe", "assets_ids": ["111"]}
    assert json.loads(sub["text"])["operation"] == "subscribe"
    assert unsub["probe"] is sub["probe"] is True  # the shard's assets did not change
    assert core.close_request is None and core.stats.probes["sent"] == 1
    core.stats.frames += 1  # the book arrives
    run_for(core, clock, 3)
    assert core.stats.probes["answered"] == 1 and core.close_request is None
    assert core.stats.stalls == {}


def test_probes_take_the_assets_in_turn():
    core, clock = up()
    probed = []
    for _ in range(2):
        run_for(core, clock, 121)
        probed.append(json.loads(core.records_out()[-1]["text"])["assets_ids"])
        core.stats.frames += 1
        run_for(core, clock, 1)
    assert probed == [["111"], ["222"]]


def test_an_unanswered_probe_fires_no_data_and_asks_to_close():
    core, clock = up()
    run_for(core, clock, 120)
    core.records_out()
    run_for(core, clock, 10)
    (stall,) = core.records_out()
    assert stall["kind"] == "no_data" and stall["silent_s"] >= 125.0
    assert core.stats.probes["unanswered"] == 1
    assert core.close_request == (1000, "stall: no_data")


def test_a_connection_without_assets_is_never_probed():
    core, clock = make()
    core.remove(ASSETS)
    core.opened()
    run_for(core, clock, 300)
    assert core.stats.probes == {} and core.close_request is None


def test_a_replica_behind_its_sibling_is_a_zombie_long_before_the_silence_timeout():
    core, clock = up(shard=0, replica=1)
    run_for(core, clock, 5, peer_data=100)  # our data mark: the sibling at 100
    run_for(core, clock, 20, peer_data=100 + PEER_LEAD_FRAMES)
    stall = core.records_out()[-1]
    assert stall["kind"] == "behind_peer" and 15.0 <= stall["silent_s"] < 30.0
    assert core.close_request == (1000, "stall: behind_peer")


def test_a_sibling_one_frame_ahead_is_not_a_lead():
    core, clock = up(replica=1)
    run_for(core, clock, 60, peer_data=100)
    run_for(core, clock, 60, peer_data=100 + PEER_LEAD_FRAMES - 1)
    assert core.close_request is None


def test_data_on_both_replicas_is_not_behind():
    core, clock = up(replica=1)
    for peer in range(100, 200):
        core.stats.frames += 1
        run_for(core, clock, 1, peer_data=peer)
    assert core.close_request is None and core.stats.stalls == {}


def test_a_sibling_coming_up_is_compared_from_then_on():
    core, clock = up(replica=1)
    run_for(core, clock, 30, peer_data=None)  # the sibling is down
    run_for(core, clock, 1, peer_data=5000)  # it comes up with its history
    assert core.close_request is None
    run_for(core, clock, 20, peer_data=5000 + PEER_LEAD_FRAMES)
    assert core.records_out()[-1]["kind"] == "behind_peer"


def test_close_after_a_stall_counts_a_stall_reconnect_with_the_watchdog_error():
    core, clock = up()
    clock.now += 30.0
    core.tick()
    core.records_out()
    core.closed(1000, "stall: no_pong", None)
    (close,) = core.records_out()
    assert close["type"] == "conn_close" and "no_pong" in close["error"]
    assert core.stats.reconnects == {"stall": 1}


def test_close_classification():
    cases = [
        (dict(code=1000, reason="bye", error=None), "closed_by_server", 1000),
        (dict(code=None, reason="", error="no close frame"), "connection_lost", 1006),
    ]
    for event, kind, code in cases:
        core, _ = up()
        core.closed(**event)
        assert core.stats.reconnects == {kind: 1}
        assert core.records_out()[-1]["code"] == code and core.state is State.CLOSED


def test_a_close_while_stopping_is_a_shutdown_not_a_reconnect():
    core, _ = up()
    core.stop()
    core.closed(1000, "shutdown", None)
    assert core.stats.reconnects == {} and core.records_out()[-1]["type"] == "conn_close"


def test_a_429_at_the_handshake_is_a_conn_close_without_code():
    core, _ = make()
    core.connect_failed("InvalidStatus: HTTP 429", 429)
    (close,) = core.records_out()
    assert close["code"] is None and close["error"].endswith("429")
    assert core.stats.reconnects == {"http_429": 1}


def test_changes_before_the_subscribe_are_not_sent_after_it_they_are():
    core, _ = make()
    core.add(["333"])
    assert core.records_out() == [] and core.data_to_send() == []
    assert json.loads(core.opened())["assets_ids"] == [*ASSETS, "333"]
    core.records_out()
    core.remove(["111"])
    core.add(["444", "222"])
    texts = [json.loads(t) for t in core.data_to_send()]
    assert texts == [
        {"operation": "unsubscribe", "assets_ids": ["111"]},
        {"operation": "subscribe", "assets_ids": ["444"], "custom_feature_enabled": True},
    ]
    assert kinds(core) == ["sent", "sent"]


def test_a_reconnect_resubscribes_the_current_assets_and_resets_the_watchdogs():
    core, clock = up()
    core.remove(["222"])
    core.closed(None, "", "gone")
    core.next_delay()
    assert core.state is State.BACKOFF
    clock.now += 500.0
    assert json.loads(core.opened())["assets_ids"] == ["111"]
    core.tick()
    assert core.close_request is None and core.stats.connects == 2
