"""What a test says when a C accelerator (see the README, "Accelerators") is missing."""

from wal import native


def not_built(source: str, without: str) -> str:
    if not native.wanted():
        return f"{native.PURE_PYTHON_ENV} is set, so {source} is not used: unset it"
    return (
        f"{source} is not built (or is stale): install a C compiler and Python's headers"
        " (Debian: apt-get install gcc python3-dev), then `rm -f .venv/.installed && make"
        " install`; without it"
        f" {without}"
    )
