"""Listing the token ids of open markets from Gamma (stdlib HTTP, run in a thread).

``/markets/keyset`` pages with ``next_cursor``; when a Gamma does not know that path
(HTTP 404), ``/markets?offset=`` is used, which Gamma caps at offset 10000. A listing
that is incomplete (that cap reached, a page failing) is a failed refresh: a
``DiscoveryError``, so the previous list stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from capture.assets import parse_markets
from capture.errors import DiscoveryError
from wal.records import Record, meta

DEFAULT_GAMMA_URL = "https://gamma-api.polymarket.com"
PAGE_LIMIT = 100  # Gamma caps limit at 100
MAX_OFFSET = 10_000  # Gamma answers 422 past this offset
MAX_PAGES = 2_000  # 200,000 markets: a cursor loop must end somewhere
HTTP_TIMEOUT_S = 30.0  # one slow page must not hold the refresh forever
USER_AGENT = "polymarket-capture/0.1"
_OPEN = {"limit": PAGE_LIMIT, "closed": "false", "active": "true"}


Observe = Callable[[str, Any], None]  # (page URL, the page's market objects)


class MarketLog:
    """A ``meta`` record per Gamma market object when first seen and whenever its content
    changes, never for an unchanged one (a full listing is tens of MB). Keeps one content
    hash per market in memory; ``observe`` may run in the discovery thread, as the WAL
    writer's ``append`` takes records from any thread."""

    def __init__(
        self, append: Callable[[Record], object], clock_ns: Callable[[], int] = time.time_ns
    ) -> None:
        self.append = append
        self.clock_ns = clock_ns
        self._hashes: dict[str, bytes] = {}

    def observe(self, source: str, markets: Any) -> int:
        """Record the new or changed objects of one page; returns how many."""
        recorded = 0
        for market in markets if isinstance(markets, list) else []:
            if not isinstance(market, dict):
                continue
            key = str(market.get("conditionId") or market.get("id"))
            text = json.dumps(market, ensure_ascii=False, separators=(",", ":"))
            digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16)
            if self._hashes.get(key) == digest.digest():
                continue
            self._hashes[key] = digest.digest()
            self.append(meta(self.clock_ns(), source, text))
            recorded += 1
        return recorded


def _get_json(url: str) -> Any:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
        return json.loads(response.read())


def _url(base: str, path: str, params: dict[str, Any]) -> str:
    return f"{base.rstrip('/')}{path}?{urllib.parse.urlencode(params)}"


def _keyset(base: str, observe: Observe | None) -> list[str]:
    tokens: list[str] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        params = dict(_OPEN, **({"after_cursor": cursor} if cursor else {}))
        url = _url(base, "/markets/keyset", params)
        body = _get_json(url)
        page = parse_markets(body, keyset=True)
        if observe is not None:
            observe(url, body["markets"])
        tokens.extend(page.tokens)
        if page.next_cursor is None or page.next_cursor == cursor:
            return tokens
        cursor = page.next_cursor
    raise DiscoveryError(
        f"Gamma /markets/keyset still had a next page after {MAX_PAGES} pages: the "
        "listing is incomplete; keeping the previous list"
    )


def _offsets(base: str, observe: Observe | None) -> list[str]:
    tokens: list[str] = []
    for offset in range(0, MAX_OFFSET + 1, PAGE_LIMIT):
        url = _url(base, "/markets", dict(_OPEN, offset=offset))
        body = _get_json(url)
        tokens.extend(parse_markets(body, keyset=False).tokens)
        if observe is not None:
            observe(url, body)
        if not isinstance(body, list) or len(body) < PAGE_LIMIT:
            return tokens
    # the markets past the cap are unlisted, not closed: unsubscribing them would be wrong
    raise DiscoveryError(
        f"Gamma /markets?offset= stops at offset {MAX_OFFSET} and the page there was "
        f"full ({len(tokens)} tokens so far): the listing is incomplete (and "
        "/markets/keyset is not available); keeping the previous list"
    )


def fetch_open_tokens(base: str, observe: Observe | None = None) -> list[str]:
    """Token ids of every active, not closed market, in Gamma's order, deduplicated.
    ``observe`` gets each page's market objects (see MarketLog)."""
    try:
        try:
            tokens = _keyset(base, observe)
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
            exc.close()
            tokens = _offsets(base, observe)
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        # HTTPException (IncompleteRead, BadStatusLine, ...) is not an OSError: a body
        # cut short or a garbled status line is a failed refresh like any other
        if isinstance(exc, urllib.error.HTTPError):
            exc.close()
        raise DiscoveryError(
            f"listing markets from {base} failed: {exc}; keeping the previous list "
            "and retrying at the next refresh"
        ) from exc
    return list(dict.fromkeys(tokens))


async def discover(base: str, observe: Observe | None = None) -> list[str]:
    """``fetch_open_tokens`` off the event loop, in a daemon thread of its own: a slow
    Gamma must not hold up a shutdown (``asyncio.run`` waits for its default executor)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[list[str]] = loop.create_future()

    def deliver(result: list[str] | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result or [])

    def work() -> None:
        try:
            result, error = fetch_open_tokens(base, observe), None
        except Exception as exc:
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
            loop.call_soon_threadsafe(deliver, result, error)

    threading.Thread(target=work, name="gamma-discovery", daemon=True).start()
    return await future
