"""The capture package's exceptions. Every one says what happened and what to do.

Tree::

    CaptureError
    ├── ConfigError      an option or an assets file is unusable (the user fixes it)
    ├── DiscoveryError   Gamma could not be read or answered something unexpected
    ├── StatusError      no usable status file: the daemon is not running or is stuck
    ├── WalDiedError     the WAL writer thread died: exit so that systemd restarts us
    └── StopTimeoutError a graceful stop ran out of --stop-timeout: records were lost

WAL problems are ``wal.WalError``s (e.g. ``WalLockedError``) and pass through as they are.
"""

from __future__ import annotations


class CaptureError(Exception):
    """Root of every error the capture package raises."""


class ConfigError(CaptureError):
    """A setting or input file cannot be used as given."""


class DiscoveryError(CaptureError):
    """Listing markets from Gamma failed; the previous asset list stays in use."""


class StatusError(CaptureError):
    """The status file is missing, unreadable or stale."""


class WalDiedError(CaptureError):
    """The WAL writer thread died; the daemon exits (status 1) for systemd to restart it."""


class StopTimeoutError(CaptureError):
    """The writer could not write out its backlog within ``--stop-timeout`` (a slow or
    failing disk): the records not written are lost; recovery seals the segment."""
