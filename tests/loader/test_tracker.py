"""loader/tracker.py: what a run still has to do, decided without I/O."""

from __future__ import annotations

from loader.tracker import (
    MTIME_SLACK_NS,
    RELIST_EVERY_POLLS,
    UNREADABLE_RETRY_INITIAL_S,
    UNREADABLE_RETRY_MAX_S,
    Tracker,
    unreadable_delay,
)

OLD_STAMP = (7, 1_000_000_000)  # (inode, mtime_ns), long before WALL_NS
WALL_NS = 100 * 1_000_000_000


def test_the_directory_is_listed_again_only_when_its_stamp_changes() -> None:
    tracker = Tracker()
    assert tracker.should_list(OLD_STAMP, WALL_NS)
    tracker.listed([], OLD_STAMP, {}, 0.0)
    assert not tracker.should_list(OLD_STAMP, WALL_NS)
    assert tracker.should_list((7, OLD_STAMP[1] + 1), WALL_NS)  # a rename into it
    assert tracker.should_list((8, OLD_STAMP[1]), WALL_NS)  # another directory
    assert tracker.should_list(None, WALL_NS)  # stat failed: let the listing say why


def test_a_recent_mtime_is_not_trusted_because_stamps_are_coarse() -> None:
    tracker = Tracker()
    fresh = (7, WALL_NS - MTIME_SLACK_NS // 2)
    tracker.listed([], fresh, {}, 0.0)
    assert tracker.should_list(fresh, WALL_NS)
    assert not tracker.should_list(fresh, WALL_NS + MTIME_SLACK_NS)


def test_the_directory_is_listed_every_n_polls_as_a_safety_net() -> None:
    tracker = Tracker()
    tracker.listed([], OLD_STAMP, {}, 0.0)
    polls = [tracker.should_list(OLD_STAMP, WALL_NS) for _ in range(RELIST_EVERY_POLLS)]
    assert polls == [False] * (RELIST_EVERY_POLLS - 1) + [True]


def test_only_names_not_seen_before_are_looked_up() -> None:
    tracker = Tracker()
    assert tracker.new_names(["b", "a"]) == ["a", "b"]
    tracker.listed(["a", "b"], OLD_STAMP, {"a": "loaded", "b": None}, 0.0)
    assert tracker.new_names(["a", "b", "c"]) == ["c"]


def test_due_lists_new_and_loading_segments_in_order_never_finished_ones() -> None:
    tracker = Tracker()
    statuses = {"c": None, "a": "loading", "b": "loaded", "d": "corrupt"}
    tracker.listed(statuses, OLD_STAMP, statuses, 0.0)
    assert tracker.due(0.0) == ["a", "c"]
    tracker.finished("a", "loaded")
    assert tracker.due(0.0) == ["c"]


def test_an_unreadable_segment_waits_out_its_backoff_unless_told_not_to() -> None:
    tracker = Tracker()
    tracker.listed(["a", "b"], OLD_STAMP, {"a": "unreadable"}, 5.0)
    assert tracker.due(5.0) == ["a", "b"]  # known unreadable: this run tries it once
    tracker.unreadable("a", retry_at=15.0)
    assert tracker.due(14.9) == ["b"]
    assert tracker.due(14.9, ignore_backoff=True) == ["a", "b"]
    assert tracker.due(15.0) == ["a", "b"]


def test_a_vanished_segment_is_forgotten_and_not_retried() -> None:
    tracker = Tracker()
    tracker.listed(["a", "b"], OLD_STAMP, {}, 0.0)
    tracker.unreadable("a", retry_at=1.0)
    tracker.listed(["b"], (7, 2), {}, 0.0)
    assert tracker.due(10.0) == ["b"] and tracker.status("a") is None


def test_the_unreadable_backoff_doubles_and_is_capped() -> None:
    delays = [unreadable_delay(tries) for tries in range(1, 12)]
    assert delays[:3] == [UNREADABLE_RETRY_INITIAL_S * k for k in (1, 2, 4)]
    assert delays == sorted(delays) and delays[-1] == UNREADABLE_RETRY_MAX_S
    assert unreadable_delay(3, initial_s=0.1, max_s=0.3) == 0.3
