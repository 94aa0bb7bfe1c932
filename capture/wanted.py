"""Which assets capture should hold: the sources merged, with the rules that keep the set
honest. Pure bookkeeping, the clock passed in.

- Assets asked for (``--asset``, ``--assets-file``) and Gamma's open markets
  (``--discover``) are wanted while their source lists them.
- ``new_market`` is broadcast to every connection whatever it subscribed, so its assets
  are followed only when asked (``follow_new``: ``--discover`` or
  ``--follow-new-markets``); an announced asset that Gamma refreshes go on not listing
  as open is dropped after ``ANNOUNCED_REFRESHES`` of them.
- ``market_resolved`` drops a market's assets after a grace period (late trades are kept).
- A refresh that would drop more than ``MAX_DROP_FRACTION`` of the assets at once is
  refused unless the next refresh confirms it: a Gamma glitch must not unsubscribe the
  feed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# New markets can list empty clobTokenIds for minutes: a few refreshes of grace, not one.
ANNOUNCED_REFRESHES = 3
MAX_DROP_FRACTION = 0.2  # more than a fifth gone at once is more likely Gamma than reality
RESOLVED_GRACE_S = 60.0  # trades can still arrive shortly after a market resolves


@dataclass(frozen=True)
class Refresh:
    """What one Gamma listing did: ``refused`` when the drop guard kept the old set."""

    applied: bool
    dropped: int  # assets this listing removed (or would have, when refused)
    confirmed: bool = False  # applied because it confirmed a refused drop


class Wanted:
    """The merged sources; ``desired()`` is what the connections should carry."""

    def __init__(
        self,
        static: Iterable[str] = (),
        *,
        follow_new: bool = False,
        resolved_grace_s: float = RESOLVED_GRACE_S,
    ) -> None:
        self.static = list(dict.fromkeys(static))
        self.file: list[str] = []
        self.discovered: list[str] = []
        self.follow_new = follow_new
        self.resolved_grace_s = resolved_grace_s
        self.announced: dict[str, int] = {}  # asset -> refreshes that did not list it
        self.resolving: dict[str, float] = {}  # asset -> when its grace ends
        self.resolved: set[str] = set()
        self.refused_total = 0
        self._refused: set[str] | None = None  # what the last, refused, refresh dropped

    def desired(self) -> list[str]:
        merged = dict.fromkeys([*self.static, *self.file, *self.discovered, *self.announced])
        return [a for a in merged if a not in self.resolved]

    def announce(self, assets: Iterable[str]) -> list[str]:
        """Assets of a ``new_market``: the ones now wanted that were not (often none)."""
        if not self.follow_new:
            return []
        held = set(self.desired())
        fresh = [a for a in dict.fromkeys(assets) if a not in held and a not in self.resolved]
        for asset in fresh:
            self.announced[asset] = 0
        return fresh

    def resolve(self, assets: Iterable[str], now: float) -> list[str]:
        """Assets of a ``market_resolved``: those wanted get dropped after the grace."""
        held = set(self.desired())
        due = now + self.resolved_grace_s
        started = [a for a in assets if a in held and a not in self.resolving]
        for asset in started:
            self.resolving[asset] = due
        return started

    def expire(self, now: float) -> list[str]:
        """Resolved assets whose grace has ended: no longer wanted."""
        done = [a for a, due in self.resolving.items() if due <= now]
        for asset in done:
            del self.resolving[asset]
            self.resolved.add(asset)
            self.announced.pop(asset, None)
        return done

    def next_expiry(self) -> float | None:
        return min(self.resolving.values(), default=None)

    def listed(self, tokens: list[str]) -> Refresh:
        """A complete Gamma listing of open markets' tokens (a failed or incomplete one
        never gets here: the previous set stays)."""
        listed = set(tokens)
        announced = {a: n + 1 for a, n in self.announced.items() if a not in listed}
        announced = {a: n for a, n in announced.items() if n < ANNOUNCED_REFRESHES}
        before = set(self.desired())
        others = set(self.static) | set(self.file) | listed | set(announced)
        gone = {a for a in before if a not in others}
        confirmed = False
        if before and len(gone) > MAX_DROP_FRACTION * len(before):
            if self._refused is None:
                self._refused = gone
                self.refused_total += 1
                return Refresh(applied=False, dropped=len(gone))
            kept = gone - self._refused  # only what both listings dropped goes
            tokens = [*tokens, *(a for a in self.discovered if a in kept)]
            announced.update({a: self.announced[a] for a in kept if a in self.announced})
            confirmed = True
            gone -= kept
        self._refused = None
        self.discovered = list(dict.fromkeys(tokens))
        self.announced = announced
        return Refresh(applied=True, dropped=len(gone), confirmed=confirmed)
