"""The loader: parse trades from sealed WAL segments and COPY them into PostgreSQL.

``parse`` is pure (frames in, rows out); ``schema``, ``store``, ``load`` and ``runner``
are the database edge; ``cli`` is the ``loader`` command. See README, "Loader".
"""

from loader.errors import (
    ConcurrentLoadError,
    DatabaseUnavailableError,
    LoaderBusyError,
    LoaderError,
    SchemaError,
    UnknownSegmentError,
)
from loader.parse import (
    PARSER_VERSION,
    InvalidTrade,
    ParseError,
    TradeRow,
    parse_frame,
    parse_trade_event,
)

__all__ = [
    "PARSER_VERSION",
    "ConcurrentLoadError",
    "DatabaseUnavailableError",
    "InvalidTrade",
    "LoaderBusyError",
    "LoaderError",
    "ParseError",
    "SchemaError",
    "TradeRow",
    "UnknownSegmentError",
    "parse_frame",
    "parse_trade_event",
]
