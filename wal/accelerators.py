"""Which C accelerators are in use (README, "Accelerators"): ``python -m wal.accelerators``.

Not imported by the packages: it imports all three to ask them.
"""

from __future__ import annotations

from wal.native import PURE_PYTHON_ENV, wanted


def report() -> list[str]:
    """A line per accelerator: whether it is built and in use (``python -m wal.accelerators``;
    ``make install`` prints it). Imports the three packages' modules to ask them."""
    from capture import protocol
    from loader import scan
    from wal import records

    used = {
        "loader/_scan.c": scan.ACCELERATED,
        "wal/_encode.c": records.ACCELERATED,
        "capture/_marks.c": protocol.marked is not protocol.py_marked,
    }
    why = (
        f"{PURE_PYTHON_ENV} is set"
        if not wanted()
        else "not built: no C compiler or Python headers when installed (README, Accelerators)"
    )
    return [f"accelerator {name}: {'in use' if on else why}" for name, on in used.items()]


if __name__ == "__main__":
    print("\n".join(report()))
