"""A websockets client connection that hands each message to a callback as it is parsed.

websockets' asyncio client queues every parsed frame in its message assembler, and
``recv()`` takes it out again in a coroutine step of its own: for a feed of tens of
thousands of small frames a second that costs about a quarter of a bare client's time
per frame. ``Receiver`` (a ``ClientConnection`` subclass, passed to ``connect()`` through
its ``create_connection`` factory) gives each complete, unfragmented message to
``on_message`` right where the protocol parsed it, in order, with the handshake, control
frames, closing and errors left to websockets.

Anything else (a fragmented message, text that is not valid UTF-8) goes to websockets'
assembler as usual, and so does every data frame after it, so that messages keep their
order: the caller's ``async for message in ws`` loop receives those, and it is what ends
when the connection closes (raising ``ConnectionClosed`` as usual). An exception raised
by ``on_message`` aborts the connection (no later message is delivered);
``receive_error`` holds it for the caller.

``process_event`` is the hook websockets' own ``ClientConnection`` overrides to handle
the handshake; it is not in websockets' documented API, hence the version range in
pyproject.toml and ``tests/capture/test_receiver.py``, which fails if it changes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, cast

from websockets.asyncio.client import ClientConnection
from websockets.frames import Frame, Opcode

_TEXT, _BINARY = Opcode.TEXT, Opcode.BINARY

OnMessage = Callable[[str | bytes], None]


class Receiver(ClientConnection):
    """``ClientConnection`` with messages delivered to ``on_message`` as they are parsed."""

    def __init__(self, *args: Any, on_message: OnMessage, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_message = on_message
        self.receive_error: Exception | None = None
        # None until the handshake response arrived; False once a message went to the
        # assembler (every later one follows it there, to keep their order)
        self._direct: bool | None = None

    @classmethod
    def factory(cls, on_message: OnMessage) -> type[ClientConnection]:
        """What ``connect(create_connection=...)`` takes."""
        return cast(type[ClientConnection], functools.partial(cls, on_message=on_message))

    def process_event(self, event: Any) -> None:
        if self._direct:
            frame = cast(Frame, event)
            opcode = frame.opcode
            if frame.fin and (opcode is _TEXT or opcode is _BINARY):
                data = frame.data
                try:
                    if opcode is _BINARY:
                        message: str | bytes = bytes(data)
                    elif isinstance(data, memoryview):
                        message = str(data, "utf-8")
                    else:
                        message = data.decode()
                except UnicodeDecodeError:  # websockets closes with 1007, as usual
                    self._direct = False
                else:
                    try:
                        self.on_message(message)
                    except Exception as exc:
                        self._failed(exc)
                    return
            elif opcode is _TEXT or opcode is _BINARY:  # the first fragment of a message
                self._direct = False
        super().process_event(event)
        if self._direct is None and self.response is not None:
            self._direct = True

    def _failed(self, exc: Exception) -> None:
        """Keep the error, take no more messages, abort the connection."""
        self.receive_error = exc
        self.on_message = _ignore
        self.transport.abort()


def _ignore(message: str | bytes) -> None:
    pass
