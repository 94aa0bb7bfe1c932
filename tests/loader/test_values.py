"""loader/values.py: the checked conversions the parsers share."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loader.values import (
    MAX_TIME_MS,
    InvalidTrade,
    fee,
    from_ms,
    from_us,
    plain_decimal,
    plain_id,
    received_at,
    timestamp,
)


@settings(max_examples=1000, deadline=None)
@given(ms=st.integers(0, MAX_TIME_MS * 4), us=st.integers(0, MAX_TIME_MS * 4000))
def test_cached_times_are_the_exact_sums(ms: int, us: int) -> None:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert from_ms(ms) == epoch + timedelta(milliseconds=ms)
    assert from_us(us) == epoch + timedelta(microseconds=us)
    assert from_us(us).tzinfo is UTC and from_ms(ms).tzinfo is UTC


@settings(max_examples=500, deadline=None)
@given(text=st.text(max_size=70))
def test_plain_decimal_reads_only_what_float_reads_the_same(text: str) -> None:
    value = plain_decimal(text)
    if value is not None:
        assert value == float(text) and value >= 0
        assert text.replace(".", "", 1).isdigit() and text.isascii()


def test_plain_id_takes_short_ascii_ids_only() -> None:
    assert plain_id("0x" + "ab" * 32)
    assert not plain_id("") and not plain_id("x" * 257) and not plain_id("a\x00b")
    assert not plain_id("é") and not plain_id(5)


def test_times_keep_the_millisecond_and_the_microsecond() -> None:
    assert timestamp("1724564136087") == datetime(2024, 8, 25, 5, 35, 36, 87000, tzinfo=UTC)
    assert received_at(1_724_564_136_087_654_321) == datetime(
        2024, 8, 25, 5, 35, 36, 87654, tzinfo=UTC
    )
    with pytest.raises(InvalidTrade, match="plausible"):
        timestamp(str(MAX_TIME_MS + 1))


def test_fee_rates_are_checked_once_and_shared() -> None:
    assert fee("0") is fee("0") == Decimal(0)
    assert fee(None) is None and fee("") is None
    with pytest.raises(InvalidTrade, match="fee rate"):
        fee("1e999")
