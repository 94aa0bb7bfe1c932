"""Whether to use the C accelerators (README, "Accelerators").

They are used wherever they were built, unless the environment variable
``POLYMARKET_CAPTURE_PURE_PYTHON=1`` asks for their Python twins: to rule the C code out
when chasing a bug, and for tests/test_demo.py to run the whole pipeline on the twins,
as on a host without a C compiler.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

PURE_PYTHON_ENV = "POLYMARKET_CAPTURE_PURE_PYTHON"


def wanted() -> bool:
    """False when the environment asks for the Python twins."""
    return os.environ.get(PURE_PYTHON_ENV, "").strip().lower() not in ("1", "true", "yes")


def module(name: str, fits: Callable[[Any], bool]) -> Any | None:
    """The built C module ``name``, or None: when it is not wanted, not built (no C
    compiler where the project was installed), or does not ``fits`` (a stale build,
    whose rules are not those of its Python twin)."""
    if not wanted():
        return None
    try:
        built = importlib.import_module(name)
    except ImportError:
        return None
    return built if fits(built) else None
