"""The market channel's protocol as values: messages we send, classes of frames we get.

Pure code, no I/O. See PROTOCOL.md.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterable

from wal import native

DEFAULT_URL = "wss://ws-subscriptions-clob.polymarket.com/ws/market"
PING_TEXT = "PING"  # app-level keepalive; the server ignores WebSocket pings
PONG_TEXT = "PONG"
CONTROL_TEXTS = frozenset({"PONG", "INVALID OPERATION", "NO NEW ASSETS"})
MAX_ASSETS_PER_CONN = 500  # above this the server silently stops sending snapshots/updates
DEFAULT_ASSETS_PER_CONN = 200  # what well-behaved clients use
NEW_MARKET_MARK = '"new_market"'  # cheap substring tests before parsing any JSON
RESOLVED_MARK = '"market_resolved"'
MARKS = (NEW_MARKET_MARK, RESOLVED_MARK)


def py_marked(text: str) -> bool:
    """Whether ``text`` holds one of MARKS: worth parsing for market events."""
    return NEW_MARKET_MARK in text or RESOLVED_MARK in text


_marks = native.module("capture._marks", lambda built: built.MARKS == MARKS)


# marked(text): py_marked, in C where it is built (capture/_marks.c): the receive loop
# asks it of every data frame.
marked: Callable[[str], bool] = _marks.marked if _marks is not None else py_marked


class FrameKind(enum.Enum):
    PONG = "pong"
    CONTROL = "control"  # INVALID OPERATION, NO NEW ASSETS, or other plain text
    EMPTY = "empty"  # "[]": the server knows none of the assets asked for
    DATA = "data"  # market data (a JSON object or a non-empty array)
    BINARY = "binary"  # not expected; recorded all the same


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


def initial_subscribe(assets: Iterable[str], *, custom_features: bool = True) -> str:
    """The one ``type: market`` message a connection sends first."""
    return _dumps(
        {
            "assets_ids": list(assets),
            "type": "market",
            "initial_dump": True,
            "custom_feature_enabled": custom_features,
        }
    )


def subscribe(assets: Iterable[str], *, custom_features: bool = True) -> str:
    """Add assets to an open connection (no ``type``: that would be INVALID OPERATION)."""
    return _dumps(
        {
            "operation": "subscribe",
            "assets_ids": list(assets),
            "custom_feature_enabled": custom_features,
        }
    )


def unsubscribe(assets: Iterable[str]) -> str:
    return _dumps({"operation": "unsubscribe", "assets_ids": list(assets)})


def classify(message: str | bytes) -> FrameKind:
    """What kind of frame this is; cheap enough to run on every frame."""
    if isinstance(message, bytes):
        return FrameKind.BINARY
    if message == PONG_TEXT:
        return FrameKind.PONG
    head = message[:1]
    if head in ("{", "["):
        return FrameKind.EMPTY if message.strip() == "[]" else FrameKind.DATA
    stripped = message.strip()
    if stripped[:1] in ("{", "["):
        return FrameKind.EMPTY if stripped == "[]" else FrameKind.DATA
    return FrameKind.CONTROL


def new_market_assets(message: str) -> list[str]:
    """Token ids announced by ``new_market`` events in a data frame (often none).

    Malformed JSON yields nothing: the frame is already recorded verbatim.
    """
    return _event_assets(message, NEW_MARKET_MARK, "new_market")


def resolved_assets(message: str) -> list[str]:
    """Token ids of the markets a data frame's ``market_resolved`` events resolve."""
    return _event_assets(message, RESOLVED_MARK, "market_resolved")


def _event_assets(message: str, mark: str, event_type: str) -> list[str]:
    if mark not in message:
        return []
    try:
        parsed = json.loads(message)
    except ValueError:
        return []
    events = parsed if isinstance(parsed, list) else [parsed]
    found: list[str] = []
    for event in events:
        if not isinstance(event, dict) or event.get("event_type") != event_type:
            continue
        ids = event.get("assets_ids")
        if isinstance(ids, list):
            found.extend(str(i) for i in ids if isinstance(i, str | int) and str(i))
    return found
