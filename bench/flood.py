"""A WebSocket sender that outruns any Python client: pre-encoded frames, ``sendall``.

``python -m bench.flood --rate R [--frames N] [--seed S]`` listens on 127.0.0.1 (a free
port), prints ``{"url", "frame_bytes"}`` as one JSON line, and serves every connection
in a thread of its own: after the handshake it sends, unmasked, a pool of realistic
frames (the fake exchange's stream) over and over, as fast as the socket takes them
(``--rate 0``) or at ``R`` frames/s, paced in small ticks. The frames are encoded once,
so sending costs a memcpy into the kernel, not Python work per frame: the receiving
client is the bottleneck, which is what ``bench/capture.py`` measures. What a client
sends (subscribe, PING) is read and ignored; a close frame is answered and ends the
connection. The bench checks the sender's own rate against a raw byte sink
(``raw_sink_rate``) before trusting any measurement made with it.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 handshake constant
POOL_FRAMES = 4096  # distinct frames, cycled; enough that compression sees variety
TICK_S = 0.002  # paced mode sends what is due every tick: smooth at 20k frames/s
CLOSE_1000 = bytes([0x88, 0x02, 0x03, 0xE8])  # a close frame, code 1000, unmasked
SINK_CHUNK = 1 << 20  # the raw sink reads this much per recv


def ws_frame(payload: bytes) -> bytes:
    """One unmasked, final text frame (server to client)."""
    n = len(payload)
    if n < 126:
        return bytes([0x81, n]) + payload
    if n < 1 << 16:
        return bytes([0x81, 126]) + n.to_bytes(2, "big") + payload
    return bytes([0x81, 127]) + n.to_bytes(8, "big") + payload


def frame_pool(count: int, seed: int, payload_bytes: int = 0) -> list[str]:
    """Realistic market frames (books, price changes, trades) from the fake's stream, or
    with ``payload_bytes`` > 0 frames of exactly that size (4: ``PONG``)."""
    from tests.fakes.stream import Universe

    if payload_bytes == 4:
        return ["PONG"] * count
    if payload_bytes > 0:
        return [f"{i:0{payload_bytes}d}" for i in range(count)]
    universe = Universe(seed)
    universe.add_markets(10)
    tokens = universe.tokens()
    return [universe.frame(tokens, 0.3, True) for _ in range(count)]


def accept_key(request: bytes) -> bytes:
    for line in request.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "sec-websocket-key":
            digest = hashlib.sha1((value.strip() + WS_GUID).encode()).digest()
            return base64.b64encode(digest)
    raise ValueError("no Sec-WebSocket-Key in the handshake")


def handshake(sock: socket.socket) -> None:
    request = b""
    while b"\r\n\r\n" not in request:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("client left during the handshake")
        request += chunk
    sock.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_key(request) + b"\r\n\r\n"
    )


def saw_close(buffer: bytearray) -> bool:
    """Consume complete client frames from ``buffer``; True when one was a close."""
    while len(buffer) >= 2:
        opcode, n = buffer[0] & 0x0F, buffer[1] & 0x7F
        head = 2
        if n == 126:
            head, n = 4, int.from_bytes(buffer[2:4], "big")
        elif n == 127:
            head, n = 10, int.from_bytes(buffer[2:10], "big")
        size = head + 4 + n  # client frames are masked
        if len(buffer) < size:
            return False
        del buffer[:size]
        if opcode == 0x8:
            return True
    return False


class Sender:
    """One client connection: a reader thread watches for its close, this one sends."""

    def __init__(
        self, sock: socket.socket, blob: bytes, offsets: list[int], rate: float, delay: float
    ):
        self.sock = sock
        self.delay = delay  # seconds between the handshake and the first frame
        self.blob = blob  # the pool twice, so any run of frames is one slice
        self.offsets = offsets  # byte offset of each pool frame in the blob
        self.rate = rate
        self.closing = threading.Event()

    def run(self) -> None:
        try:
            handshake(self.sock)
            threading.Thread(target=self._read, daemon=True).start()
            self.closing.wait(self.delay)
            self._flat_out() if self.rate <= 0 else self._paced()
            self.sock.sendall(CLOSE_1000)
        except OSError:
            pass
        finally:
            self.sock.close()

    def _read(self) -> None:
        buffer = bytearray()
        try:
            while chunk := self.sock.recv(65536):
                buffer += chunk
                if saw_close(buffer):
                    break
        except OSError:
            pass
        self.closing.set()

    def _flat_out(self) -> None:
        whole = memoryview(self.blob)[: len(self.blob) // 2]
        while not self.closing.is_set():
            self.sock.sendall(whole)

    def _paced(self) -> None:
        pool = len(self.offsets) - 1
        view = memoryview(self.blob)
        start, sent = time.monotonic(), 0
        while not self.closing.is_set():
            due = int((time.monotonic() - start) * self.rate) - sent
            while due > 0:
                first = sent % pool
                count = min(due, pool)
                end = self.offsets[first + count] if first + count <= pool else None
                if end is None:  # wraps: the blob holds the pool twice
                    end = self.offsets[pool] + self.offsets[first + count - pool]
                self.sock.sendall(view[self.offsets[first] : end])
                sent += count
                due -= count
            time.sleep(TICK_S)


def encode_pool(texts: list[str]) -> tuple[bytes, list[int]]:
    frames = [ws_frame(t.encode()) for t in texts]
    offsets = [0]
    for f in frames:
        offsets.append(offsets[-1] + len(f))
    one = b"".join(frames)
    return one + one, offsets


def raw_sink_rate(url: str, seconds: float, frame_bytes: float) -> float:
    """Frames/s the sender pushes into a client that only reads bytes (no parsing)."""
    host, port = url.removeprefix("ws://").split("/")[0].split(":")
    with socket.create_connection((host, int(port))) as sock:
        key = base64.b64encode(os.urandom(16))
        sock.sendall(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        buf = bytearray(SINK_CHUNK)
        got = 0
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            got += sock.recv_into(buf)
        return got / elapsed / frame_bytes


def serve(rate: float, frames: int, seed: int, payload_bytes: int, delay: float) -> None:
    texts = frame_pool(frames, seed, payload_bytes)
    blob, offsets = encode_pool(texts)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    frame_bytes = offsets[-1] / frames
    print(json.dumps({"url": f"ws://127.0.0.1:{port}/ws/market", "frame_bytes": frame_bytes}))
    sys.stdout.flush()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        sock, _ = listener.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sender = Sender(sock, blob, offsets, rate, delay)
        threading.Thread(target=sender.run, daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=0.0, help="frames/s; 0: flat out")
    parser.add_argument("--frames", type=int, default=POOL_FRAMES)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--payload-bytes", type=int, default=0, help="fixed-size frames")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before sending")
    args = parser.parse_args()
    serve(args.rate, args.frames, args.seed, args.payload_bytes, args.delay)


if __name__ == "__main__":
    main()
