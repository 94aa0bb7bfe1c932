"""Discovery against the fake Gamma over real HTTP."""

from __future__ import annotations

import pytest

from capture.discovery import discover
from capture.errors import DiscoveryError
from tests.capture.helpers import CutShortGamma
from tests.fakes.exchange import FakeExchange


async def test_keyset_pages_through_every_open_market():
    async with FakeExchange(assets=250 * 2) as ex:
        closed = ex.tokens()[0]
        ex.close_market(closed)
        tokens = await discover(ex.gamma_url)
        closed_market = ex.universe.by_token[closed].tokens
        assert tokens == [t for t in ex.tokens() if t not in closed_market]
        assert len(ex.gamma_requests) == 3
        assert all(
            r.startswith("/markets/keyset?limit=100&closed=false&active=true")
            for r in ex.gamma_requests
        )
        assert "after_cursor=100" in ex.gamma_requests[1]


async def test_falls_back_to_offset_paging_without_keyset():
    async with FakeExchange(assets=150 * 2) as ex:
        ex.gamma_keyset = False
        tokens = await discover(ex.gamma_url)
        assert tokens == ex.tokens()
        assert [r.split("?")[0] for r in ex.gamma_requests] == [
            "/markets/keyset",
            "/markets",
            "/markets",
        ]


async def test_unreachable_gamma_is_a_discovery_error():
    with pytest.raises(DiscoveryError, match="keeping the previous list"):
        await discover("http://127.0.0.1:1")


async def test_a_body_cut_short_is_a_discovery_error():
    # http.client.IncompleteRead is an HTTPException, not an OSError
    async with CutShortGamma() as gamma:
        with pytest.raises(DiscoveryError, match=r"IncompleteRead.*keeping the previous list"):
            await discover(gamma.url)
        assert gamma.requests == 1
