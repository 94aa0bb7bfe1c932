"""The one timeout constant for tests. Slow machines set TEST_TIMEOUT_SCALE (e.g. 3)."""

import os

SCALE = float(os.environ.get("TEST_TIMEOUT_SCALE", "1"))
TIMEOUT_S = 10.0 * SCALE  # default wait for anything a test expects to happen


def scaled(seconds: float) -> float:
    """``seconds`` stretched by TEST_TIMEOUT_SCALE."""
    return seconds * SCALE
