"""The loader's exceptions. Every one says what happened and what to do.

Tree::

    LoaderError
    ├── InvalidTrade         (loader.parse) a trade event that cannot be a trade;
    │                        frame parsing turns it into a ParseError value
    ├── SchemaError          the database has no schema, or a newer one than this loader
    │   └── TimescaleSetupError  TimescaleDB cannot be set up as ``--timescaledb`` asks
    │                        (not loaded, not permitted, not installed with ``require``)
    ├── TokenKeyCollision    two different (token, market) pairs share a storage key
    ├── LoaderBusyError      another ``loader run`` already holds this database
    ├── DatabaseUnavailableError  the database stayed away longer than ``--max-wait``
    ├── ConcurrentLoadError  a segment's committed offset moved under us
    ├── UnknownSegmentError  ``reparse --segment NAME`` names no file in the WAL directory
    └── SegmentNameError     ``reparse --segment NAME`` names no sealed segment (an
                             ``.open`` one, or not a segment at all); the CLI makes it
                             a usage error

Database outages are not LoaderErrors: they are psycopg errors that ``loader.db``
classifies by SQLSTATE and the run loop waits out with backoff; other psycopg errors
end the command. Corrupt and unreadable segments are not errors either: they are
recorded on the segment (status ``corrupt``, ``unreadable``) and reported by ``status``.
"""

from __future__ import annotations


class LoaderError(Exception):
    """Root of every error the loader package raises on purpose."""


class SchemaError(LoaderError):
    """The schema is missing or newer than this loader knows."""


class TimescaleSetupError(SchemaError):
    """The server's TimescaleDB setup does not allow what ``--timescaledb`` asks."""


class TokenKeyCollision(LoaderError):
    """Two different (token id, market) pairs hash to one ``token_keys.id``."""


class LoaderBusyError(LoaderError):
    """Another loader process already loads into this database.

    ``holder_pid``: the backend pid holding the run lock, None when unknown.
    """

    def __init__(self, message: str, *, holder_pid: int | None = None) -> None:
        super().__init__(message)
        self.holder_pid = holder_pid


class DatabaseUnavailableError(LoaderError):
    """The database did not come back within the time a caller was willing to wait."""


class ConcurrentLoadError(LoaderError):
    """Someone else changed a segment's offset while we were loading it."""


class UnknownSegmentError(LoaderError):
    """A segment named on the command line is not in the WAL directory."""


class SegmentNameError(LoaderError):
    """A name given to reparse is not the name of a sealed segment."""
