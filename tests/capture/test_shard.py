from hypothesis import given
from hypothesis import strategies as st

from capture.shard import Shards


def test_1000_assets_become_5_connections_of_200():
    shards = Shards(200)
    plan = shards.add(str(i) for i in range(1000))
    assert sorted(plan.open) == [0, 1, 2, 3, 4]
    assert [len(a) for a in plan.open.values()] == [200] * 5
    assert not plan.add


def test_new_assets_fill_connections_with_room_first():
    shards = Shards(3)
    shards.add(["a", "b", "c", "d"])
    plan = shards.add(["e", "f", "g"])
    assert plan.add == {1: ["e", "f"]}
    assert plan.open == {2: ["g"]}


def test_removed_assets_free_room_that_is_reused():
    shards = Shards(2)
    shards.add(["a", "b", "c"])
    plan = shards.remove(["a", "zzz"])
    assert plan.remove == {0: ["a"]}
    assert shards.add(["d"]).add == {0: ["d"]}


def test_adding_known_assets_is_a_no_op():
    shards = Shards(2)
    shards.add(["a", "b"])
    plan = shards.add(["b", "a", "a"])
    assert not plan.add and not plan.open


@given(st.lists(st.lists(st.integers(0, 60).map(str), max_size=40), max_size=6), st.integers(1, 7))
def test_each_asset_on_exactly_one_connection_within_the_limit(batches, limit):
    shards = Shards(limit)
    for i, batch in enumerate(batches):
        if i % 3 == 2:
            shards.remove(batch)
        else:
            shards.add(batch)
    held = [a for assets in shards.conns.values() for a in assets]
    assert len(held) == len(set(held)) == len(shards.owner)
    assert all(len(a) <= limit for a in shards.conns.values())
    assert all(a in shards.conns[c] for a, c in shards.owner.items())
