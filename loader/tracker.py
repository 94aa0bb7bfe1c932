"""Which sealed segments a run still has to load, kept in memory: a pure core.

``loader run`` polls every second for as long as it runs, so a poll must not cost more
as history grows. The tracker makes that possible: it remembers the state of every
sealed file in the WAL directory, so the run loop lists the directory only when its
modification time says it changed (or every ``RELIST_EVERY_POLLS`` polls, as a safety
net), asks the database only about names it has not seen, and sends no query at all
while nothing is due. Unreadable segments wait out a backoff. The clocks are passed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

RELIST_EVERY_POLLS = 60  # a change the directory's mtime did not show is seen within a minute
# Filesystems stamp mtimes from a coarse clock: a rename within this of a listing may
# leave the directory's mtime unchanged, so a stamp this recent is not trusted.
MTIME_SLACK_NS = 2_000_000_000
UNREADABLE_RETRY_INITIAL_S = 10.0  # a file restored or re-permitted loads within seconds
UNREADABLE_RETRY_MAX_S = 300.0  # at worst one try per rotation period: a cheap open() each

DirStamp = tuple[int, int]  # (st_ino, st_mtime_ns) of the WAL directory

LOADED, CORRUPT, LOADING, UNREADABLE = "loaded", "corrupt", "loading", "unreadable"
_FINISHED = frozenset({LOADED, CORRUPT})


def unreadable_delay(
    tries: int,
    initial_s: float = UNREADABLE_RETRY_INITIAL_S,
    max_s: float = UNREADABLE_RETRY_MAX_S,
) -> float:
    """Seconds to wait before reading a segment again after its ``tries``-th failure."""
    return min(initial_s * 2 ** max(tries - 1, 0), max_s)


@dataclass
class _Entry:
    status: str | None  # None: not in the database yet
    retry_at: float = 0.0  # monotonic time of the next try (unreadable only)


class Tracker:
    """The sealed segments on disk and what is left to do with each."""

    def __init__(self, *, relist_every: int = RELIST_EVERY_POLLS) -> None:
        self.relist_every = relist_every
        self._entries: dict[str, _Entry] = {}
        self._open: set[str] = set()  # names not loaded or corrupt: what ``due`` looks at
        self._stamp: DirStamp | None = None
        self._polls = 0

    def should_list(self, stamp: DirStamp | None, wall_ns: int) -> bool:
        """Whether this poll must list the directory (called once per poll)."""
        self._polls += 1
        return (
            stamp is None
            or stamp != self._stamp
            or self._polls >= self.relist_every
            or wall_ns - stamp[1] < MTIME_SLACK_NS
        )

    def new_names(self, names: Iterable[str]) -> list[str]:
        """The names of a listing not seen yet (to look up in the database), in order."""
        return sorted(set(names) - self._entries.keys())

    def listed(
        self,
        names: Iterable[str],
        stamp: DirStamp | None,
        statuses: dict[str, str | None],
        now: float,
    ) -> None:
        """Take a listing and the database's word on its new names (``statuses``; None:
        not in the database). An unreadable one is due at once: this run has not tried
        it yet. Names no longer on disk are forgotten (a vanished segment is not retried).
        """
        present = set(names)
        for gone in self._entries.keys() - present:
            del self._entries[gone]
            self._open.discard(gone)
        for name in present - self._entries.keys():
            self._set(name, _Entry(statuses.get(name), now))
        self._stamp, self._polls = stamp, 0

    def due(self, now: float, *, ignore_backoff: bool = False) -> list[str]:
        """Names to load now, in sequence order."""
        return sorted(
            name
            for name in self._open
            if (entry := self._entries[name]).status != UNREADABLE
            or ignore_backoff
            or entry.retry_at <= now
        )

    def finished(self, name: str, status: str) -> None:
        """The segment ended ``status`` (``loaded``/``corrupt``: never due again)."""
        if name in self._entries:
            self._set(name, _Entry(status))

    def unreadable(self, name: str, retry_at: float) -> None:
        """Reading the segment failed; try again at ``retry_at`` (monotonic)."""
        if name in self._entries:
            self._set(name, _Entry(UNREADABLE, retry_at))

    def _set(self, name: str, entry: _Entry) -> None:
        self._entries[name] = entry
        if entry.status in _FINISHED:
            self._open.discard(name)
        else:
            self._open.add(name)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def status(self, name: str) -> str | None:
        entry = self._entries.get(name)
        return entry.status if entry else None
