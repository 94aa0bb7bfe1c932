"""Checked conversions of the feed's values: numbers, ids, times and fee rates. Pure.

Each function takes what a JSON event holds and gives the value a row stores, or raises
:class:`InvalidTrade` saying why it cannot be one. The trade parser (loader.parse), the
book parser (loader.books) and the market parser (loader.markets) share them, so one
field means one rule everywhere. The ``plain_*`` tests are narrower and faster: the
fast paths use them and give anything else to the full checks.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from loader.errors import LoaderError

# 2020-01-01: Polymarket's CLOB started in 2022, so anything earlier is seconds or junk.
MIN_TIME_MS = 1_577_836_800_000
# 2100-01-01: a larger value is micro- or nanoseconds sent where milliseconds belong.
MAX_TIME_MS = 4_102_444_800_000
# The longest decimal we accept; real prices, sizes and fees are under 20 characters,
# and the bound keeps absurd values away from PostgreSQL's numeric limits.
MAX_NUMBER_CHARS = 64
# Ids are 66-78 characters; anything this long is not an id.
MAX_TEXT_CHARS = 256
# A fee rate above 100% (10,000 bps) either way is not a fee.
MAX_ABS_FEE_BPS = Decimal(10_000)
# Decimal places kept exactly for fee_rate_bps; more cannot be real and could exceed
# numeric's scale limit.
MAX_FEE_SCALE = 18

# The feed sends a handful of distinct fee rates; their checked Decimals are kept by text.
MAX_CACHED_FEES = 1024
KNOWN_FEES: dict[str, Decimal] = {}
# Timestamps are built from a cached datetime per whole second plus a cached timedelta
# (about 5x faster than datetime arithmetic per value, and exact: integers throughout).
MAX_CACHED_SECONDS = 1 << 17
_SECONDS: dict[int, datetime] = {}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_STEPS = tuple(timedelta(microseconds=i) for i in range(1000))  # 0-999 microseconds
_MILLI_STEPS = tuple(timedelta(milliseconds=i) for i in range(1000))
_DECIMAL_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)


class InvalidTrade(LoaderError):
    """A ``last_trade_price`` event that cannot be a trade; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def from_ms(ms: int) -> datetime:
    """The UTC time ``ms`` milliseconds after the epoch (ms >= 0)."""
    second, milli = divmod(ms, 1000)
    return (_SECONDS.get(second) or _second(second)) + _MILLI_STEPS[milli]


def from_us(micros: int) -> datetime:
    """The UTC time ``micros`` microseconds after the epoch (micros >= 0)."""
    second = micros // 1_000_000
    base = _SECONDS.get(second) or _second(second)
    return base + _MILLI_STEPS[micros // 1000 % 1000] + _STEPS[micros % 1000]


def _second(second: int) -> datetime:
    """The UTC time of a whole second after the epoch, remembered."""
    if len(_SECONDS) >= MAX_CACHED_SECONDS:
        _SECONDS.clear()
    value = _SECONDS[second] = _EPOCH + timedelta(seconds=second)
    return value


def plain_decimal(text: str) -> float | None:
    """The value of digits with at most one point in them (what number accepts and
    reads as the same float), else None."""
    if len(text) <= MAX_NUMBER_CHARS and text.isascii() and text.replace(".", "", 1).isdigit():
        return float(text)
    return None


def plain_id(value: Any) -> bool:
    """True for an id optional_text accepts as it is: a short non-empty ASCII string."""
    return (
        type(value) is str
        and 0 < len(value) <= MAX_TEXT_CHARS
        and value.isascii()
        and "\x00" not in value
    )


def number(event: dict[str, Any], name: str) -> float:
    """Field ``name`` as a finite float: a decimal string or a JSON number."""
    value = event.get(name)
    if isinstance(value, str):
        if len(value) > MAX_NUMBER_CHARS or not _DECIMAL_RE.fullmatch(value):
            raise InvalidTrade(f"{name} {short(value)} is not a decimal number")
        result = float(value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            result = float(value)
        except OverflowError:
            raise InvalidTrade(f"{name} is too large") from None
    elif value is None:
        raise InvalidTrade(f"{name} is missing")
    else:
        raise InvalidTrade(f"{name} {short(value)} is not a number")
    if not math.isfinite(result):
        raise InvalidTrade(f"{name} {short(value)} is not finite")
    return result


def timestamp(value: Any) -> datetime:
    """Epoch milliseconds (digits or an integer) as a plausible UTC time."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 16:
        ms = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        ms = value
    elif value is None:
        raise InvalidTrade("timestamp is missing")
    else:
        raise InvalidTrade(f"timestamp {short(value)} is not epoch milliseconds")
    if not MIN_TIME_MS <= ms <= MAX_TIME_MS:
        raise InvalidTrade(f"timestamp {ms} is not a plausible time in milliseconds")
    return from_ms(ms)


def received_at(ts_ns: Any) -> datetime:
    """A record's ``ts_ns`` as a UTC time, to the microsecond."""
    if not isinstance(ts_ns, int) or isinstance(ts_ns, bool):
        raise InvalidTrade(f"record ts_ns {short(ts_ns)} is not an integer")
    if not MIN_TIME_MS * 1_000_000 <= ts_ns <= MAX_TIME_MS * 1_000_000:
        raise InvalidTrade(f"record ts_ns {ts_ns} is not a plausible time")
    return from_us(ts_ns // 1000)


def fee(value: Any) -> Decimal | None:
    """``fee_rate_bps`` as a Decimal (None when absent); checked texts are remembered."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        cached = KNOWN_FEES.get(value)
        if cached is not None:
            return cached
    fee = _checked_fee(value)
    if isinstance(value, str) and fee is not None:
        if len(KNOWN_FEES) >= MAX_CACHED_FEES:
            KNOWN_FEES.clear()
        KNOWN_FEES[value] = fee  # a Decimal is immutable: rows may share it
    return fee


def _checked_fee(value: Any) -> Decimal | None:
    fee = _fee_decimal(value)
    if (
        fee is None
        or not fee.is_finite()
        or abs(fee) > MAX_ABS_FEE_BPS
        or int(fee.as_tuple().exponent) < -MAX_FEE_SCALE
    ):
        raise InvalidTrade(f"fee_rate_bps {short(value)} is not a plausible fee rate")
    return fee


def _fee_decimal(value: Any) -> Decimal | None:
    if isinstance(value, str):
        if len(value) > MAX_NUMBER_CHARS or not _DECIMAL_RE.fullmatch(value):
            return None
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))  # the shortest text of the float, as sent
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    return None


def text(event: dict[str, Any], name: str) -> str:
    """Field ``name`` as a required id."""
    value = optional_text(event, name)
    if value is None:
        raise InvalidTrade(f"{name} is missing or empty")
    return value


def optional_text(event: dict[str, Any], name: str) -> str | None:
    """Field ``name`` as an id, None when absent or empty."""
    value = event.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidTrade(f"{name} {short(value)} is not a string")
    if len(value) > MAX_TEXT_CHARS or "\x00" in value or not (value.isascii() or encodable(value)):
        raise InvalidTrade(f"{name} {short(value)} is not a plausible id")
    return value


def encodable(text: str) -> bool:
    """True when UTF-8 can encode ``text`` (PostgreSQL can store it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, which PostgreSQL cannot store
        return False
    return True


def short(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters, for messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
