"""Market metadata parsing: ``meta`` records and ``new_market``/``market_resolved`` events
in, market observations out. Pure: no I/O, no clock.

A ``meta`` record (written by capture's discovery) holds one Gamma market object as
JSON text; Gamma encodes ``outcomes`` and ``clobTokenIds`` as JSON strings holding lists.
The feed's ``new_market`` and ``market_resolved`` events carry the same facts under other
names. Each observation keeps what its source says and leaves the rest None, so the
database can take each field from the latest observation that has it.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, NamedTuple

from loader import parse, scan, values
from loader.values import InvalidTrade

META_TYPE = "meta"
NEW_MARKET = "new_market"
MARKET_RESOLVED = "market_resolved"
MAX_OUTCOMES = 64  # a market has a handful; more is not a market


class MarketObservation(NamedTuple):
    """What one record says about a market (None: it does not say)."""

    condition_id: str
    observed_at: datetime
    source: str
    question: str | None
    slug: str | None
    event_slug: str | None
    outcomes: list[str] | None
    token_ids: list[str] | None
    active: bool | None
    closed: bool | None
    end_date: datetime | None
    resolved_at: datetime | None
    winning_token_id: str | None


def scan_markets(data: bytes, starts: list[int] | None = None) -> list[MarketObservation]:
    """The market observations in one zstd frame's bytes (whole lines), in line order;
    ``starts``: the lines to look at, as loader.scan found them (else it is asked)."""
    if starts is None:
        starts = scan.lines(data).markets
    found: list[MarketObservation] = []
    for start in starts:
        end = data.find(b"\n", start)
        try:
            record = parse._decode_record(data[start : end if end >= 0 else len(data)])
        except ValueError:
            continue  # the trade scan reports lines that are no record
        found.extend(observations(record))
    return found


def observations(record: dict[str, Any]) -> list[MarketObservation]:
    """The market observations of one record; nothing for records that hold none or
    cannot be read (metadata is best effort: it never holds up a segment)."""
    try:
        received = values.received_at(record.get("ts_ns"))
    except InvalidTrade:
        return []
    if record["type"] == META_TYPE:
        try:
            market = json.loads(record.get("text") or "")
        except (TypeError, ValueError):
            return []
        obs = _gamma(market, received) if isinstance(market, dict) else None
        return [obs] if obs else []
    if record["type"] != "frame":
        return []
    out = []
    for event in parse._events(record):
        if event.get("event_type") in (NEW_MARKET, MARKET_RESOLVED):
            obs = _event(event, received)
            if obs:
                out.append(obs)
    return out


def _gamma(market: dict[str, Any], received: datetime) -> MarketObservation | None:
    condition = _str(market.get("conditionId"))
    if condition is None:
        return None
    events = market.get("events")
    first = events[0] if isinstance(events, list) and events and isinstance(events[0], dict) else {}
    return MarketObservation(
        condition,
        received,
        "gamma",
        _str(market.get("question")),
        _str(market.get("slug")),
        _str(first.get("slug")),
        _strings(market.get("outcomes")),
        _strings(market.get("clobTokenIds")),
        _bool(market.get("active")),
        _bool(market.get("closed")),
        _time(market.get("endDate")),
        None,
        None,
    )


def _event(event: dict[str, Any], received: datetime) -> MarketObservation | None:
    condition = _str(event.get("market")) or _str(event.get("condition_id"))
    if condition is None:
        return None
    message = event.get("event_message")
    resolved = event.get("event_type") == MARKET_RESOLVED
    try:
        resolved_at = values.timestamp(event.get("timestamp")) if resolved else None
    except InvalidTrade:
        resolved_at = None
    return MarketObservation(
        condition,
        received,
        str(event["event_type"]),
        _str(event.get("question")),
        _str(event.get("slug")),
        _str(message.get("slug")) if isinstance(message, dict) else None,
        _strings(event.get("outcomes")),
        _strings(event.get("assets_ids") or event.get("clob_token_ids")),
        _bool(event.get("active")),
        True if resolved else _bool(event.get("closed")),
        None,
        resolved_at,
        _str(event.get("winning_asset_id")) if resolved else None,
    )


def _str(value: Any) -> str | None:
    if not isinstance(value, str) or not value or "\x00" in value:
        return None
    return value if values.encodable(value) else None


def _strings(value: Any) -> list[str] | None:
    if isinstance(value, str):  # Gamma: a JSON-encoded list
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if not isinstance(value, list) or len(value) > MAX_OUTCOMES:
        return None
    items = [_str(item) for item in value]
    return None if any(item is None for item in items) else [i for i in items if i]


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else None
