"""The Receiver against a real websockets server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from capture.receiver import Receiver
from tests.timeouts import TIMEOUT_S


def _feed(messages: list[object]) -> Callable[[ServerConnection], object]:
    async def handler(ws: ServerConnection) -> None:
        await ws.recv()  # the client's hello: it is listening
        for message in messages:
            await ws.send(message)  # type: ignore[arg-type]
        await ws.close()

    return handler


@pytest.fixture
async def server_url(request) -> AsyncIterator[str]:
    handler = _feed(request.param)
    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}"


async def receive_all(url: str, on_message=None) -> tuple[list[str | bytes], Receiver]:
    """Every message, as the Receiver delivered it or the ``async for`` loop got it."""
    got: list[str | bytes] = []
    factory = Receiver.factory(on_message or got.append)
    async with connect(url, create_connection=factory) as ws:
        assert isinstance(ws, Receiver)
        await ws.send("hello")
        async with asyncio.timeout(TIMEOUT_S):
            async for message in ws:
                got.append(message)
    return got, ws


SIMPLE = ["a", b"\x00\x01", "é ü", "[]"]


@pytest.mark.parametrize("server_url", [SIMPLE], indirect=True)
async def test_receiver_delivers_every_message_as_it_is_parsed(server_url):
    delivered: list[str | bytes] = []
    got, _ = await receive_all(server_url, delivered.append)
    assert delivered == SIMPLE
    assert got == []  # nothing was left to the assembler


FRAGMENTED = ["first", ["frag", "mented"], "after", b"bin"]


@pytest.mark.parametrize("server_url", [FRAGMENTED], indirect=True)
async def test_receiver_keeps_order_when_a_fragmented_message_goes_to_websockets(server_url):
    got, _ = await receive_all(server_url)
    assert got == ["first", "fragmented", "after", b"bin"]


@pytest.mark.parametrize("server_url", [["one", "two", "three"]], indirect=True)
async def test_receiver_ends_the_connection_when_on_message_raises_and_keeps_the_error(
    server_url,
):
    seen: list[str | bytes] = []

    def on_message(message: str | bytes) -> None:
        seen.append(message)
        if message == "two":
            raise RuntimeError("disk gone")

    factory = Receiver.factory(on_message)
    async with connect(server_url, create_connection=factory) as ws:
        await ws.send("hello")
        with contextlib.suppress(ConnectionClosed):  # or a normal end, if the close came too
            async with asyncio.timeout(TIMEOUT_S):
                async for _ in ws:
                    pass
    assert seen == ["one", "two"]
    assert isinstance(ws, Receiver)
    assert isinstance(ws.receive_error, RuntimeError)
