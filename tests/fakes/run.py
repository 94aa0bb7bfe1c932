"""``python -m tests.fakes.exchange``: the fake exchange as a process of its own.

Usage: ``python -m tests.fakes.exchange --port P --assets N --rate R --trade-fraction F
--seed S [--record FILE [--record-received]]``. Prints ``{"ws_url", "gamma_url", "port",
"tokens"}`` as one JSON line on stdout, then serves until SIGTERM/SIGINT. Faults:
``GET`` or ``POST /control/<name>?...`` (``control`` in tests/fakes/http.py).

The record file has one JSON line per message sent, ``{"conn", "ts_ns", "text" |
"b64"}``, and with ``--record-received`` one per message received other than ``PING``
(the subscribes and unsubscribes), ``{"conn", "ts_ns", "received"}``: a capture
connection whose ``sent`` record has the same text is that fake connection.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from pathlib import Path
from typing import Any

from tests.fakes.exchange import PING_TIMEOUT_S, FakeExchange


async def _serve_forever(args: Any) -> None:
    exchange = FakeExchange(
        assets=args.assets,
        rate=args.rate,
        trade_fraction=args.trade_fraction,
        seed=args.seed,
        port=args.port,
        record=args.record,
        record_received=args.record_received,
        new_market_prob=args.new_market_prob,
        max_new_markets=args.max_new_markets,
        keep_sent=False,
        ping_timeout=args.ping_timeout,
        shared_stream=args.shared_stream,
    )
    async with exchange:
        print(
            json.dumps(
                {
                    "ws_url": exchange.ws_url,
                    "gamma_url": exchange.gamma_url,
                    "port": exchange.port,
                    "tokens": len(exchange.tokens()),
                }
            ),
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.exchange", description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--assets", type=int, default=20)
    parser.add_argument("--rate", type=float, default=20.0, help="frames/s per connection; 0: max")
    parser.add_argument("--trade-fraction", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--shared-stream",
        action="store_true",
        help="the same events to every connection with the same assets (redundancy tests)",
    )
    parser.add_argument("--ping-timeout", type=float, default=PING_TIMEOUT_S)
    parser.add_argument("--record", type=Path, help="append every frame sent, as JSONL")
    parser.add_argument(
        "--record-received",
        action="store_true",
        help='also record each message received but PING, as {"conn", "ts_ns", "received"}',
    )
    parser.add_argument(
        "--new-market-prob",
        type=float,
        default=0.001,
        help="chance that a data frame is instead a new market announced to all (0: never)",
    )
    parser.add_argument(
        "--max-new-markets", type=int, default=5, help="at most this many new markets"
    )
    asyncio.run(_serve_forever(parser.parse_args(argv)))
