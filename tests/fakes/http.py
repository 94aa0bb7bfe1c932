"""The fake exchange's HTTP side besides the WebSocket handshake: Gamma's ``/markets``
and ``/markets/keyset``, and the ``/control/<name>`` fault switches of process mode."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Response

from tests.fakes.stream import Universe

if TYPE_CHECKING:
    from tests.fakes.exchange import FakeExchange

GAMMA_MAX_LIMIT = 100
GAMMA_MAX_OFFSET = 10_000


def json_response(ws: ServerConnection, body: Any) -> Response:
    """``body`` as a JSON 200 response (a Response passes as it is)."""
    if isinstance(body, Response):
        return body
    response = ws.respond(200, json.dumps(body))
    headers = Headers(response.headers)
    headers["Content-Type"] = "application/json"
    return Response(response.status_code, response.reason_phrase, headers, response.body)


def open_markets(
    universe: Universe, query: dict[str, str], start: int, stop: int
) -> list[dict[str, Any]]:
    """Gamma market objects ``start:stop`` of those the query's filters keep."""
    markets = universe.markets
    if query.get("closed") == "false":
        markets = [m for m in markets if not m.closed]
    if query.get("active") == "true":
        markets = [m for m in markets if m.active]
    return [m.gamma() for m in markets[start:stop]]


def markets_offset(ws: ServerConnection, universe: Universe, query: dict[str, str]) -> Any:
    """``/markets``: offset paging, refused past GAMMA_MAX_OFFSET as the real one does."""
    offset, limit = int(query.get("offset", 0)), int(query.get("limit", 20))
    if offset > GAMMA_MAX_OFFSET:  # as the real one: use /markets/keyset instead
        body = json.dumps({"error": f"offset {offset} exceeds {GAMMA_MAX_OFFSET}"})
        return ws.respond(422, body)
    return open_markets(universe, query, offset, offset + min(limit, GAMMA_MAX_LIMIT))


def markets_keyset(universe: Universe, query: dict[str, str]) -> Any:
    """``/markets/keyset``: cursor paging."""
    start = int(query.get("after_cursor") or 0)
    limit = min(int(query.get("limit", 20)), GAMMA_MAX_LIMIT)
    markets = open_markets(universe, query, start, start + limit + 1)  # one more: is there a next?
    body: dict[str, Any] = {"markets": markets[:limit]}
    if len(markets) > limit:
        body["next_cursor"] = str(start + limit)
    return body


def control(ex: FakeExchange, name: str, query: dict[str, str]) -> Any:
    """drop_all, drop_conn?conn=, stall_data?on=1|0, stall_all?on=1|0, stall_conn?conn=&on=1|0,
    reject?status=&count=, garbage, new_market, close_market?token=,
    resolve_market?token=, revise_market?index=, stats."""
    on = query.get("on", "1") == "1"
    if name == "drop_all":
        ex.drop_all()
    elif name == "drop_conn":
        return {"dropped": ex.drop_conn(int(query["conn"]))}
    elif name == "stall_data":
        ex.stall_data = on
    elif name == "stall_all":
        ex.stall_all = on
    elif name == "stall_conn":
        conn_id = int(query["conn"])
        ex.stall_conns.add(conn_id) if on else ex.stall_conns.discard(conn_id)
    elif name == "reject":
        ex.reject(int(query.get("status", 429)), int(query.get("count", 1)))
    elif name == "garbage":
        asyncio.get_running_loop().create_task(ex.send_garbage())
    elif name == "new_market":
        return {"assets_ids": ex.announce_market()}
    elif name == "close_market":
        ex.close_market(query["token"])
    elif name == "revise_market":
        ex.universe.markets[int(query.get("index", 0))].revise()
    elif name == "resolve_market":
        return {"assets_ids": ex.resolve_market(query["token"])}
    elif name != "stats":
        return {"error": f"unknown control {name}"}
    return {
        "ok": True,
        "connections": len(ex.conns),
        "open": sorted(ex.conns),
        "handshakes": ex.handshakes,
        "sent": {str(k): len(v) for k, v in ex.sent.items()},
    }
