"""The replica rule, fed by hand: rows = the most identical events any one replica sent."""

from __future__ import annotations

import json
import random

from loader.dedup import WINDOW_NS, Dedup

SECOND = 1_000_000_000


def kept(dedup: Dedup, events: list[tuple[int, str, int]], shard: str = "s0") -> int:
    """Rows made of (replica, identity, received_ns) events, in order."""
    return sum(dedup.keep(shard, replica, (ident,), t) for replica, ident, t in events)


def test_a_trade_both_replicas_saw_is_one_row() -> None:
    assert kept(Dedup(), [(0, "a", 0), (1, "a", 5_000_000)]) == 1


def test_identical_fills_in_one_transaction_stay_as_many_rows_as_one_replica_saw() -> None:
    events = [(0, "a", 0), (0, "a", 1), (1, "a", 2), (1, "a", 3)]
    assert kept(Dedup(), events) == 2


def test_rows_are_the_largest_count_of_any_single_replica() -> None:
    events = [(1, "a", 0), (0, "a", 1), (1, "a", 2), (0, "a", 3), (1, "a", 4)]
    assert kept(Dedup(), events) == 3


def test_a_trade_only_one_replica_saw_is_one_row() -> None:
    assert kept(Dedup(), [(1, "a", 0), (1, "b", 1)]) == 2


def test_identical_events_beyond_the_window_are_separate_rows() -> None:
    events = [(0, "a", 0), (1, "a", 1), (0, "a", WINDOW_NS + 2), (1, "a", WINDOW_NS + 3)]
    assert kept(Dedup(), events) == 2


def test_shards_are_deduplicated_apart() -> None:
    dedup = Dedup()
    assert dedup.keep("s0", 0, ("a",), 0) and dedup.keep("s1", 0, ("a",), 0)


def test_state_through_json_at_any_point_gives_the_same_decisions() -> None:
    rng = random.Random(7)
    events = [(rng.randrange(2), rng.choice("abc"), i * SECOND // 3) for i in range(200)]
    whole = Dedup()
    expected = [whole.keep("s0", r, (i,), t) for r, i, t in events]
    for cut in (0, 1, 50, 137, 199):
        first = Dedup()
        got = [first.keep("s0", r, (i,), t) for r, i, t in events[:cut]]
        first.prune(events[cut - 1][2] if cut else 0)
        again = Dedup.from_json(json.loads(json.dumps(first.to_json())))
        got += [again.keep("s0", r, (i,), t) for r, i, t in events[cut:]]
        assert got == expected


def test_prune_forgets_only_groups_past_the_window() -> None:
    dedup = Dedup()
    dedup.keep("s0", 0, ("old",), 0)
    dedup.keep("s0", 0, ("new",), 10 * SECOND)
    dedup.prune(WINDOW_NS + 5 * SECOND)
    assert [ident for _shard, ident in dedup.groups] == [("new",)]
