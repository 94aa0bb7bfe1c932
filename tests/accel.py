"""What a test says when a C accelerator (see the README, "Accelerators") is missing."""


def not_built(source: str, without: str) -> str:
    return (
        f"{source} is not built (or is stale): install a C compiler and Python's headers"
        " (Debian: apt-get install gcc python3-dev), then run `make install`; without it"
        f" {without}"
    )
