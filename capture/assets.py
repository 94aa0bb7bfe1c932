"""Asset lists from files and from Gamma responses. Pure parsing, no I/O."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from capture.errors import ConfigError, DiscoveryError


def parse_assets_file(text: str, source: str = "assets file") -> list[str]:
    """One token id per line; ``#`` starts a comment; blank lines are ignored."""
    assets: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if not line.isdigit():
            raise ConfigError(
                f"{source}, line {number}: {line!r} is not a token id (a decimal number). "
                "Put one token id per line; '#' starts a comment."
            )
        assets.append(line)
    return list(dict.fromkeys(assets))


@dataclass(frozen=True)
class Page:
    """One page of markets: token ids of open markets, and the cursor of the next page."""

    tokens: list[str]
    next_cursor: str | None


def token_ids(market: dict[str, Any]) -> list[str]:
    """A market's ``clobTokenIds``: a JSON-encoded string holding a list (may be empty)."""
    raw = market.get("clobTokenIds")
    if raw in (None, ""):
        return []
    try:
        ids = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return []
    if not isinstance(ids, list):
        return []
    return [str(i) for i in ids if str(i).isdigit()]


def is_open(market: dict[str, Any]) -> bool:
    return bool(market.get("active", True)) and not market.get("closed", False)


def parse_markets(body: Any, *, keyset: bool) -> Page:
    """A ``/markets`` (JSON array) or ``/markets/keyset`` (``{markets, next_cursor}``) body."""
    if keyset:
        if not isinstance(body, dict) or not isinstance(body.get("markets"), list):
            raise DiscoveryError(
                f"Gamma /markets/keyset answered {type(body).__name__}, not an object "
                "with a 'markets' list; check --gamma-url"
            )
        markets, cursor = body["markets"], body.get("next_cursor") or None
    else:
        if not isinstance(body, list):
            raise DiscoveryError(
                f"Gamma /markets answered {type(body).__name__}, not a list; check --gamma-url"
            )
        markets, cursor = body, None
    tokens: list[str] = []
    for market in markets:
        if isinstance(market, dict) and is_open(market):
            tokens.extend(token_ids(market))
    return Page(tokens, str(cursor) if cursor is not None else None)
