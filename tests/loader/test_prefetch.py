"""loader/prefetch.py: order, exceptions in place, an abandoned producer stops."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from loader.prefetch import Prefetch
from tests.timeouts import TIMEOUT_S


def test_prefetch_yields_every_item_in_order() -> None:
    with Prefetch(iter(range(1000)), depth=3) as ahead:
        assert list(ahead) == list(range(1000))


def test_prefetch_raises_the_producers_error_after_the_items_before_it() -> None:
    def source() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("damaged at 3")

    seen = []
    with Prefetch(source()) as ahead, pytest.raises(ValueError, match="damaged at 3"):
        for item in ahead:
            seen.append(item)
    assert seen == [1, 2]


def test_closing_stops_a_producer_blocked_on_a_full_queue() -> None:
    produced = threading.Event()

    def endless() -> Iterator[int]:
        n = 0
        while True:
            produced.set()
            yield n
            n += 1

    ahead = Prefetch(endless(), depth=2)
    assert produced.wait(TIMEOUT_S)
    assert next(iter(ahead)) == 0
    ahead.close()
    assert not ahead._thread.is_alive()
