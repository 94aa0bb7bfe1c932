"""Coverage over parsed batches: record order kept, no per-row work without replicas."""

from __future__ import annotations

import itertools
import json
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from loader.coverage import Coverage
from loader.gaps import Gap
from loader.parse import scan_batch
from tests.loader.helpers import BASE_MS, opened, subscribed, trade_frame
from wal.records import conn_close, encode_record

S = 1_000_000_000


def batch(*records: dict) -> bytes:
    return b"".join(encode_record(r) for r in records)


def test_scan_batch_hands_over_lifecycle_records_and_trade_sources_in_order() -> None:
    trade = trade_frame(3, conn=1)
    result = scan_batch(batch(opened(1, 1, 0, 1), trade, conn_close(2, 1, "u", 1006, "")))
    assert [(pos, r["type"]) for pos, r in result.others] == [(0, "conn_open"), (1, "conn_close")]
    assert result.sources == [(0, 1, trade["ts_ns"])]
    assert result.last_frame_ns is None  # the last line is no frame
    assert scan_batch(batch(trade)).last_frame_ns == trade["ts_ns"]


def test_without_replicas_the_rows_pass_untouched() -> None:
    result = scan_batch(batch(opened(1, 0), trade_frame(1), trade_frame(1)))
    rows, gaps = Coverage().feed(result)
    assert rows is result.rows and len(rows) == 2 and gaps == []


def test_a_second_replica_in_the_same_batch_deduplicates_from_its_open_on() -> None:
    one, other = trade_frame(1, conn=0), trade_frame(1, conn=1)
    other["ts_ns"] += 1000
    result = scan_batch(
        batch(
            opened(1, 0, 0, 0),
            subscribed(2, 0, ["a"]),
            opened(3, 1, 0, 1),
            subscribed(4, 1, ["a"]),
            one,
            other,
        )
    )
    rows, _ = Coverage().feed(result)
    assert len(rows) == 1


def test_state_through_json_between_batches_gives_the_same_rows_and_gaps() -> None:
    head = batch(opened(1, 0, 0, 0), subscribed(2, 0, ["a"]), opened(3, 1, 0, 1))
    first = batch(
        subscribed(4, 1, ["a"]), trade_frame(1, conn=0), conn_close(5 * S, 0, "u", 1006, "")
    )
    second = trade_frame(1, conn=1)
    second["ts_ns"] += 1000
    tail = batch(second, conn_close(6 * S, 1, "u", 1006, ""), subscribed(7 * S, 0, ["a"]))
    whole, cut = Coverage(), Coverage()
    expected = [whole.feed(scan_batch(b)) for b in (head, first, tail)]
    got = [cut.feed(scan_batch(b)) for b in (head, first)]
    again = Coverage.from_json(json.loads(json.dumps(cut.to_json())))
    got.append(again.feed(scan_batch(tail)))
    assert got == expected
    assert sum(len(rows) for rows, _ in got) == 1
    assert got[2][1] == [Gap("s0", 6 * S, 7 * S, ("a",), "close 1006")]


@settings(max_examples=40, deadline=None)
@given(
    deliveries=st.lists(st.tuples(st.integers(0, 1), st.integers(0, 3)), max_size=40),
    cuts=st.lists(st.integers(1, 40), max_size=4),
)
def test_rows_are_the_most_any_replica_delivered_however_the_batches_fall(
    deliveries: list[tuple[int, int]], cuts: list[int]
) -> None:
    """(replica, which of four trades) deliveries within a second; batches cut anywhere,
    the state through JSON at every cut: each trade's rows are its largest per-replica count."""
    head = [
        opened(1, 0, 0, 0),
        subscribed(2, 0, ["a"]),
        opened(3, 1, 0, 1),
        subscribed(4, 1, ["a"]),
    ]
    records = [*head]
    for n, (replica, trade) in enumerate(deliveries):
        record = trade_frame(trade, conn=replica)
        record["ts_ns"] += n * 1000
        records.append(record)
    bounds = sorted({0, *[c for c in cuts if c < len(records)], len(records)})
    cover, rows = Coverage(), []
    for a, b in itertools.pairwise(bounds):
        cover = Coverage.from_json(json.loads(json.dumps(cover.to_json())))
        rows += cover.feed(scan_batch(batch(*records[a:b])))[0]
    per_replica = Counter(deliveries)
    expected = Counter({t: max(per_replica[(0, t)], per_replica[(1, t)]) for _r, t in deliveries})
    got = Counter(round(row.ts.timestamp() * 1000) - BASE_MS for row in rows)  # = the trade
    assert got == +expected
