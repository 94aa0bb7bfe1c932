"""The capture daemon: keep sharded connections to Polymarket's market channel open
and append every frame, verbatim and with its receive time, to the WAL.

Pure, synchronous core (no I/O): ``core`` (one connection's protocol as a state
machine: events in, records and messages out), ``protocol`` (messages, frame classes),
``shard`` (assets to shards), ``wanted`` (which assets to hold), ``backoff``,
``watchdog``, ``assets`` (assets file, Gamma responses), ``status`` (status document).
asyncio edges: ``connection`` (the core's driver), ``daemon``,
``discovery``, ``notify``, ``metrics``; the ``capture`` CLI is ``cli``.
"""

from capture.errors import CaptureError, ConfigError, DiscoveryError, StatusError

__all__ = ["CaptureError", "ConfigError", "DiscoveryError", "StatusError"]
