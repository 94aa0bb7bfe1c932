"""Shared helpers for the capture tests: waiting, reading a WAL dir, a list sink."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

from tests.timeouts import TIMEOUT_S
from wal import SegmentReader, list_segments, records
from wal.records import frame_payload

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 handshake constant


async def wait_for(predicate: Callable[[], bool], timeout: float = TIMEOUT_S) -> None:
    """Poll ``predicate`` until true; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        await asyncio.sleep(0.02)


def wait_for_sync(predicate: Callable[[], bool], timeout: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        time.sleep(0.05)


def wal_records(wal_dir: Path) -> list[dict[str, Any]]:
    """Every record of every segment (sealed and open) in order."""
    out: list[dict[str, Any]] = []
    for _, path in list_segments(wal_dir):
        out.extend(record for _, record in SegmentReader(path).records())
    return out


def frames_by_conn(records: list[dict[str, Any]]) -> dict[int, list[str | bytes]]:
    out: dict[int, list[str | bytes]] = {}
    for record in records:
        if record["type"] == "frame":
            out.setdefault(record["conn"], []).append(frame_payload(record))
    return out


class ListSink:
    """Stands in for the WAL writer in connection tests: keeps records in a list."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def append(self, record: dict[str, Any]) -> int:
        self.records.append(record)
        return len(self.records)

    def append_frame(self, ts_ns: int, conn: int, n: int, message: str | bytes) -> int:
        return self.append(records.frame(ts_ns, conn, n, message))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["type"] == kind]


class LoopbackServer:
    """A raw asyncio TCP server on 127.0.0.1 (a free port), used as an async context
    manager; subclasses implement ``_handle``."""

    SCHEME = "http"
    PATH = ""

    def __init__(self) -> None:
        self.requests = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"{self.SCHEME}://127.0.0.1:{port}{self.PATH}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class CutShortGamma(LoopbackServer):
    """A tiny HTTP server that answers every request with ``Content-Length: 1000`` and a
    short body, then closes: the client gets ``http.client.IncompleteRead``."""

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b'Content-Length: 1000\r\nConnection: close\r\n\r\n{"markets": ['
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


class HungGamma(LoopbackServer):
    """Accepts HTTP requests and never answers until ``release()`` closes them all."""

    def __init__(self) -> None:
        super().__init__()
        self._writers: list[asyncio.StreamWriter] = []

    async def __aexit__(self, *exc: object) -> None:
        await self.release()
        await super().__aexit__(*exc)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await reader.readuntil(b"\r\n\r\n")
            self.requests += 1

    async def release(self) -> None:
        """Close every connection held: the client sees the server hang up."""
        writers, self._writers = self._writers, []
        for writer in writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


class DeafServer(LoopbackServer):
    """A WebSocket server that streams text frames and never reads: it ignores our close
    frame, so only the drain timeout ends a stop. Raw asyncio, no websockets server
    (which would answer the close)."""

    SCHEME = "ws"
    PATH = "/ws/market"

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            key = next(
                line.split(":", 1)[1].strip()
                for line in head.split("\r\n")
                if line.lower().startswith("sec-websocket-key:")
            )
            accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept.encode() + b"\r\n\r\n"
            )
            while True:
                payload = b'{"event_type": "price_change", "n": %d}' % self.sent
                writer.write(bytes([0x81, len(payload)]) + payload)  # FIN, text, < 126 bytes
                self.sent += 1
                await writer.drain()
                await asyncio.sleep(0.01)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


class FloodServer(LoopbackServer):
    """A WebSocket server that, once ``go`` is set, sends the same text frame over and
    over as fast as the socket takes it (pre-encoded: the test's loop stays light), until
    ``stop()``. What the client sends is never read."""

    SCHEME = "ws"
    PATH = "/ws/market"
    FRAMES_PER_WRITE = 2000

    def __init__(self, payload: str) -> None:
        super().__init__()
        data = payload.encode()
        assert len(data) < 1 << 16
        head = bytes([0x81, len(data)]) if len(data) < 126 else bytes([0x81, 126])
        if len(data) >= 126:
            head += len(data).to_bytes(2, "big")
        self.blob = (head + data) * self.FRAMES_PER_WRITE
        self.go = asyncio.Event()
        self.connected = asyncio.Event()
        self.sent = 0
        self._stopping = False

    def stop(self) -> None:
        self._stopping = True

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            key = next(
                line.split(":", 1)[1].strip()
                for line in head.split("\r\n")
                if line.lower().startswith("sec-websocket-key:")
            )
            accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept.encode() + b"\r\n\r\n"
            )
            self.connected.set()
            await self.go.wait()
            while not self._stopping:
                writer.write(self.blob)
                self.sent += self.FRAMES_PER_WRITE
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
