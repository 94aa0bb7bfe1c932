"""Gap computation, fed records by hand: per shard, spans no replica carried."""

from __future__ import annotations

import json

from loader.gaps import CAPTURE_DOWN, DROPPED_SHARD, Gap, Tracker
from tests.loader.helpers import opened, subscribed
from wal.records import conn_close, dropped, seal, stall

S = 1_000_000_000
ASSETS = ["a1", "a2"]


def feed(tracker: Tracker, records: list[dict]) -> list[Gap]:
    return [gap for record in records for gap in tracker.feed(record)]


def two_replicas() -> list[dict]:
    return [
        opened(1 * S, 0, shard=0, replica=0),
        subscribed(2 * S, 0, ASSETS),
        opened(3 * S, 1, shard=0, replica=1),
        subscribed(4 * S, 1, ASSETS),
    ]


def test_a_drop_a_sibling_covers_is_no_gap() -> None:
    records = [
        *two_replicas(),
        stall(10 * S, 0, "no_data", 120.0),
        conn_close(11 * S, 0, "u", 1000, "stall: no_data"),
        opened(12 * S, 0, shard=0, replica=0),
        subscribed(13 * S, 0, ASSETS),
        conn_close(20 * S, 1, "u", 1006, ""),
        subscribed(22 * S, 1, ASSETS),
    ]
    tracker = Tracker()
    assert feed(tracker, records) == [] and tracker.open_gaps() == []


def test_both_replicas_down_at_once_is_one_gap_from_the_last_drop_to_the_next_subscribe() -> None:
    records = [
        *two_replicas(),
        conn_close(10 * S, 0, "u", 1006, ""),
        stall(11 * S, 1, "no_pong", 30.0),
        conn_close(11 * S, 1, "u", 1000, "stall: no_pong"),
        conn_close(12 * S, 0, "u", None, ""),  # a failed reconnect changes nothing
        subscribed(15 * S, 1, ASSETS),
        subscribed(16 * S, 0, ASSETS),
    ]
    assert feed(Tracker(), records) == [Gap("s0", 11 * S, 15 * S, ("a1", "a2"), "stall no_pong")]


def test_without_shard_fields_each_connection_is_its_own_shard() -> None:
    records = [
        opened(1 * S, 0),
        subscribed(2 * S, 0, ["a"]),
        opened(1 * S, 1),
        subscribed(2 * S, 1, ["b"]),
        conn_close(10 * S, 0, "u", 1006, ""),
        opened(12 * S, 0),
        subscribed(13 * S, 0, ["a"]),
    ]
    assert feed(Tracker(), records) == [Gap("c0", 10 * S, 13 * S, ("a",), "close 1006")]


def test_a_graceful_shutdown_opens_no_gap() -> None:
    records = [*two_replicas(), conn_close(9 * S, 0, "u", 1000, "shutdown")]
    records.append(conn_close(9 * S, 1, "u", 1000, "shutdown"))
    tracker = Tracker()
    assert feed(tracker, records) == [] and tracker.open_gaps() == []


def test_a_crash_is_a_gap_from_the_last_record_to_the_next_subscribe_of_the_shard() -> None:
    tracker = Tracker()
    feed(tracker, two_replicas())
    tracker.see(30 * S)  # the last frame before the crash
    feed(tracker, [seal(99 * S, 10, 5, recovered=True, truncated_bytes=0)])
    assert tracker.open_gaps() == [Gap("s0", 30 * S, None, ("a1", "a2"), CAPTURE_DOWN)]
    again = [opened(100 * S, 0, shard=0, replica=0), subscribed(101 * S, 0, ASSETS)]
    assert feed(tracker, again) == [Gap("s0", 30 * S, 101 * S, ("a1", "a2"), CAPTURE_DOWN)]


def test_dropped_frames_are_a_gap_of_every_carried_asset() -> None:
    tracker = Tracker()
    feed(tracker, two_replicas())
    gaps = feed(tracker, [dropped(8 * S, 12, "buffer_full")])
    assert gaps == [Gap(DROPPED_SHARD, 4 * S, 8 * S, ("a1", "a2"), "dropped 12 (buffer_full)")]


def test_a_gap_open_at_a_segment_end_is_closed_by_the_carried_state() -> None:
    tracker = Tracker()
    feed(tracker, [*two_replicas(), conn_close(10 * S, 0, "u", 1006, "")])
    feed(tracker, [conn_close(11 * S, 1, "u", 1006, "")])
    carried = Tracker.from_json(json.loads(json.dumps(tracker.to_json())))
    assert carried == tracker
    assert feed(carried, [subscribed(20 * S, 1, ASSETS)]) == [
        Gap("s0", 11 * S, 20 * S, ("a1", "a2"), "close 1006")
    ]


def test_later_subscriptions_change_what_a_gap_covers() -> None:
    records = [
        opened(1 * S, 0),
        subscribed(2 * S, 0, ["a"]),
        {
            "type": "sent",
            "ts_ns": 3 * S,
            "conn": 0,
            "text": json.dumps({"operation": "subscribe", "assets_ids": ["b", "c"]}),
        },
        {
            "type": "sent",
            "ts_ns": 4 * S,
            "conn": 0,
            "text": json.dumps({"operation": "unsubscribe", "assets_ids": ["a"]}),
        },
        conn_close(5 * S, 0, "u", 1011, "keepalive failed"),
    ]
    tracker = Tracker()
    feed(tracker, records)
    assert tracker.open_gaps() == [
        Gap("c0", 5 * S, None, ("b", "c"), "close 1011 keepalive failed")
    ]


def test_a_liveness_probe_keeps_its_asset_on_the_connection() -> None:
    probe = [
        {**sent, "probe": True}
        for sent in (
            {
                "type": "sent",
                "ts_ns": 5 * S,
                "conn": 0,
                "text": json.dumps({"operation": "unsubscribe", "assets_ids": ["a1"]}),
            },
            {
                "type": "sent",
                "ts_ns": 5 * S,
                "conn": 0,
                "text": json.dumps({"operation": "subscribe", "assets_ids": ["a1"]}),
            },
        )
    ]
    records = [
        opened(1 * S, 0, shard=0, replica=0),
        subscribed(2 * S, 0, ASSETS),
        probe[0],  # a drop right after the probe's unsubscribe still covers a1
        conn_close(6 * S, 0, "u", 1006, ""),
        probe[1],
        subscribed(8 * S, 0, ASSETS),
    ]
    assert feed(Tracker(), records) == [Gap("s0", 6 * S, 8 * S, ("a1", "a2"), "close 1006")]
