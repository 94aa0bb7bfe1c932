from wal import records
from wal.pending import Pending, encode_items, item_cost, item_size, line_item
from wal.records import encode_record


def _frames(count: int, text: str = "x" * 100) -> list:
    return [(1_700_000_000_000_000_000 + i, 0, i, text) for i in range(count)]


def test_records_are_cut_into_batches_of_about_batch_bytes_as_they_arrive():
    pending = Pending(batch_bytes=1000)
    items = _frames(50)
    full = [pending.add(item, item_size(item), item_cost(item)) for item in items]
    assert sum(full) == len(pending.cuts) > 1
    batches = pending.take()
    assert [item for batch, _ in batches for item in batch] == items  # in order, all
    assert sum(cost for _, cost in batches) == sum(map(item_cost, items))
    assert all(sum(map(item_size, batch)) < 1000 + item_size(items[0]) for batch, _ in batches)
    assert pending.take() == [] and pending.cost == 0


def test_requeued_records_go_first_and_keep_their_cost():
    pending = Pending(batch_bytes=1000)
    first, later = _frames(20), _frames(5, "y")
    for item in later:
        pending.add(item, item_size(item), item_cost(item))
    pending.requeue(first)
    batches = pending.take()
    assert [item for batch, _ in batches for item in batch] == first + later
    assert sum(cost for _, cost in batches) == sum(map(item_cost, first + later))


def test_a_batch_with_other_records_and_binary_frames_encodes_like_encode_record():
    sent = records.sent(5, 0, '{"type": "market"}')
    items = [*_frames(2), line_item(encode_record(sent)), (9, 1, 0, b"\x00\xff"), *_frames(1)]
    data, frames = encode_items(items)
    expected = [encode_record(records.frame(*f)) for f in _frames(2)]
    expected += [encode_record(sent), encode_record(records.frame(9, 1, 0, b"\x00\xff"))]
    expected += [encode_record(records.frame(*_frames(1)[0]))]
    assert data == b"".join(expected) and frames == 4
