"""Whether to use the C accelerators (README, "Accelerators").

They are used wherever they were built, unless the environment variable
``POLYMARKET_CAPTURE_PURE_PYTHON=1`` asks for their Python twins: to rule the C code out
when chasing a bug, and for tests/test_demo.py to run the whole pipeline on the twins,
as on a host without a C compiler.
"""

from __future__ import annotations

import os

PURE_PYTHON_ENV = "POLYMARKET_CAPTURE_PURE_PYTHON"


def wanted() -> bool:
    """False when the environment asks for the Python twins."""
    return os.environ.get(PURE_PYTHON_ENV, "").strip().lower() not in ("1", "true", "yes")
