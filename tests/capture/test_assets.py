import json

import pytest

from capture.assets import parse_assets_file, parse_markets, token_ids
from capture.errors import ConfigError, DiscoveryError


def test_assets_file_skips_comments_blanks_and_duplicates():
    text = "# tokens\n111\n\n  222  # the second\n111\n"
    assert parse_assets_file(text) == ["111", "222"]


def test_assets_file_names_the_bad_line():
    with pytest.raises(ConfigError, match=r"f.txt, line 2: 'abc'"):
        parse_assets_file("1\nabc\n", "f.txt")


def test_clob_token_ids_is_a_json_encoded_string():
    market = {"clobTokenIds": json.dumps(["123", "456"])}
    assert token_ids(market) == ["123", "456"]
    assert token_ids({"clobTokenIds": ""}) == []
    assert token_ids({}) == []
    assert token_ids({"clobTokenIds": "not json"}) == []


def test_parse_markets_keeps_open_markets_only():
    body = [
        {"clobTokenIds": '["1","2"]', "active": True, "closed": False},
        {"clobTokenIds": '["3","4"]', "active": True, "closed": True},
        {"clobTokenIds": '["5"]', "active": False, "closed": False},
    ]
    page = parse_markets(body, keyset=False)
    assert page.tokens == ["1", "2"] and page.next_cursor is None


def test_parse_keyset_page_and_cursor():
    page = parse_markets(
        {"markets": [{"clobTokenIds": '["9"]'}], "next_cursor": "abc"}, keyset=True
    )
    assert page.tokens == ["9"] and page.next_cursor == "abc"
    assert parse_markets({"markets": []}, keyset=True).next_cursor is None


def test_unexpected_gamma_bodies_are_discovery_errors():
    with pytest.raises(DiscoveryError):
        parse_markets({"error": "x"}, keyset=False)
    with pytest.raises(DiscoveryError):
        parse_markets([], keyset=True)
