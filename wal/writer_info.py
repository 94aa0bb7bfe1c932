"""Who wrote a segment (the header's ``writer`` field)."""

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("polymarket-capture")
except PackageNotFoundError:  # running from a source tree that is not installed
    VERSION = "0.0.0"

DEFAULT_WRITER = f"polymarket-capture {VERSION}"
