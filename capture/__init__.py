"""The capture daemon: keep sharded connections to Polymarket's market channel open
and append every frame, verbatim and with its receive time, to the WAL.

Pure, synchronous core (no I/O): ``protocol`` (messages, frame classes), ``shard``
(assets to connections), ``backoff``, ``watchdog``, ``assets`` (assets file, Gamma
responses), ``status`` (status document). asyncio edges: ``connection``, ``daemon``,
``discovery``, ``notify``, ``metrics``; the ``capture`` CLI is ``cli``.
"""

from capture.errors import CaptureError, ConfigError, DiscoveryError, StatusError

__all__ = ["CaptureError", "ConfigError", "DiscoveryError", "StatusError"]
