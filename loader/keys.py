"""Compact storage keys for trade rows. Pure: values in, values out.

Schema v2 stores a trade's 77-character token id and 66-character market id once, in
``token_keys``, and each row carries an 8-byte key instead. The key is derived from the
pair itself (the first 8 bytes of SHA-256 of ``token_id + "\\n" + market``, big-endian,
signed), so the loader needs no round trip to learn it, every database computes the same
key for the same pair, and SQL can compute it too (:data:`SQL_TOKEN_KEY`, used by the v1
migration). A collision between two different pairs cannot go unnoticed: ``token_keys``
has both the key and the pair unique, and the loader checks what it wrote.

A ``transaction_hash`` that is ``0x`` and 64 lowercase hex digits (every real one) is
stored as its 32 bytes; anything else is kept verbatim in a text column, so the
``trades`` view gives back exactly what the feed sent.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

# The same key in SQL, for a row with columns token_id and market (PostgreSQL 11+).
SQL_TOKEN_KEY = (
    "('x' || left(encode(sha256(convert_to(token_id || E'\\n' || market, 'UTF8')), 'hex'), 16))"
    "::bit(64)::bigint"
)
# The hash form stored as bytes (split_hash); the SQL twin keeps the v1 migration equal.
SQL_HASH_PATTERN = "^0x[0-9a-f]{64}$"
_KEY_CACHE = 1 << 16  # distinct (token, market) pairs remembered; ~20k assets are live


@lru_cache(maxsize=_KEY_CACHE)
def token_key(token_id: str, market: str) -> int:
    """The ``token_keys.id`` of a (token id, market) pair."""
    digest = hashlib.sha256(f"{token_id}\n{market}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def split_hash(value: str | None) -> tuple[bytes | None, str | None]:
    """``(tx_hash, tx_hash_text)``: the bytes of a canonical hash, or the text as sent."""
    if value is None or len(value) != 66 or not value.startswith("0x"):
        return None, value
    digits = value[2:]
    try:
        raw = bytes.fromhex(digits)  # also takes upper case and spaces: checked below
    except ValueError:
        return None, value
    return (raw, None) if raw.hex() == digits else (None, value)


def join_hash(raw: bytes | None, text: str | None) -> str | None:
    """The ``transaction_hash`` that :func:`split_hash` split."""
    return "0x" + raw.hex() if raw is not None else text
