"""The daemon's signals: SIGTERM and SIGINT stop it, SIGHUP reloads the assets file."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
RELOAD_SIGNAL = signal.SIGHUP


@contextlib.contextmanager
def handled_signals(
    on_stop: Callable[[], None], on_reload: Callable[[], None], *, enabled: bool = True
) -> Iterator[None]:
    """Handle the signals in the running loop while inside; restore the defaults after.

    ``enabled=False`` (tests running a daemon in-process) leaves signals alone, as does
    a loop outside the main thread (where asyncio cannot handle them)."""
    installed: list[signal.Signals] = []
    if enabled:
        loop = asyncio.get_running_loop()
        try:
            for sig in STOP_SIGNALS:
                loop.add_signal_handler(sig, on_stop)
                installed.append(sig)
            loop.add_signal_handler(RELOAD_SIGNAL, on_reload)
            installed.append(RELOAD_SIGNAL)
        except (RuntimeError, ValueError):
            log.debug("not in the main thread: no signal handlers")
    try:
        yield
    finally:
        for sig in installed:
            with contextlib.suppress(RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
