"""loader/keys.py: storage keys computed in Python equal the SQL twin; hashes round-trip."""

from __future__ import annotations

import psycopg
from hypothesis import given, settings
from hypothesis import strategies as st

from loader.keys import SQL_HASH_PATTERN, SQL_TOKEN_KEY, join_hash, split_hash, token_key

_ids = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=80
)


def test_token_key_in_python_equals_the_sql_used_by_the_migration(fresh_db: str) -> None:
    pairs = [
        ("72710166409980712002774407052535905861151156175854323762835102340552522606004", "0x12"),
        ("", ""),
        ("ü€😀", "line\nbreak"),
        ("1", "0x" + "f" * 64),
    ]
    with psycopg.connect(fresh_db) as conn:
        got = conn.execute(
            f"SELECT {SQL_TOKEN_KEY} FROM unnest(%s::text[], %s::text[]) AS t(token_id, market)",
            ([p[0] for p in pairs], [p[1] for p in pairs]),
        ).fetchall()
    assert [row[0] for row in got] == [token_key(*pair) for pair in pairs]


@settings(max_examples=50, deadline=None)
@given(token=_ids, market=_ids)
def test_token_key_is_a_signed_64_bit_value(token: str, market: str) -> None:
    key = token_key(token, market)
    assert -(2**63) <= key < 2**63 and key == token_key(token, market)


@given(value=st.one_of(st.none(), st.text(max_size=80), st.binary(min_size=32, max_size=32)))
def test_split_hash_round_trips_every_value(value: str | bytes | None) -> None:
    text = "0x" + value.hex() if isinstance(value, bytes) else value
    raw, rest = split_hash(text)
    assert join_hash(raw, rest) == text
    assert (raw is not None) == (isinstance(value, bytes))


def test_only_lower_case_canonical_hashes_become_bytes() -> None:
    assert split_hash("0x" + "ab" * 32)[0] == bytes.fromhex("ab" * 32)
    assert split_hash("0x" + "AB" * 32) == (None, "0x" + "AB" * 32)
    assert split_hash("0x" + "ab" * 31) == (None, "0x" + "ab" * 31)
    assert split_hash("") == (None, "")


def test_the_sql_hash_pattern_agrees_with_split_hash(fresh_db: str) -> None:
    values = ["0x" + "ab" * 32, "0x" + "AB" * 32, "0xab", "", "0x" + "ab" * 32 + "\n"]
    with psycopg.connect(fresh_db) as conn:
        got = conn.execute(
            "SELECT v ~ %s FROM unnest(%s::text[]) WITH ORDINALITY AS t(v, i) ORDER BY i",
            (SQL_HASH_PATTERN, values),
        ).fetchall()
    assert [row[0] for row in got] == [split_hash(v)[0] is not None for v in values]
