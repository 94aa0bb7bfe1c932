"""Run an iterator in a background thread, a bounded number of items ahead.

The loader parses the next zstd frames while the main thread waits for PostgreSQL
(index and foreign-key work at the end of each COPY, the commit). Parsing is pure,
so running it ahead changes nothing about what is committed or when: offsets still
only move in the main thread's transactions.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

DEFAULT_DEPTH = 8  # zstd frames parsed ahead: ~8 MiB of input, enough to cover a commit
_POLL_S = 0.1  # how often a blocked producer checks whether the consumer went away
_END = object()


class Prefetch(Generic[T]):
    """Iterate ``source`` in a thread; exceptions re-raise in the consumer, in order.

    Use as a context manager (or call ``close``) so an abandoned producer stops.
    """

    def __init__(self, source: Iterator[T], depth: int = DEFAULT_DEPTH) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._closed = threading.Event()
        self._thread = threading.Thread(
            target=self._produce, args=(source,), name="loader-prefetch", daemon=True
        )
        self._thread.start()

    def __iter__(self) -> Iterator[T]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item  # type: ignore[misc]

    def close(self) -> None:
        self._closed.set()
        self._thread.join()

    def __enter__(self) -> Prefetch[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _produce(self, source: Iterator[T]) -> None:
        try:
            for item in source:
                if not self._put(item):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(_Raised(exc))
            return
        self._put(_END)

    def _put(self, item: object) -> bool:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False


class _Raised:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
