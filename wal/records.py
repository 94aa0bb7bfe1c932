"""Record encoding for format v1: one JSON object per ``\\n``-terminated UTF-8 line.

Pure code. Lone surrogates (which a WebSocket text frame cannot carry, but a caller's
string might) are written as JSON ``\\udXXX`` escapes, so the line is still valid UTF-8
and the string reads back identical; everything else is written as literal UTF-8.
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Callable
from json.encoder import encode_basestring
from operator import itemgetter
from typing import Any

import orjson

from wal import native

FORMAT_VERSION = 1
# A received frame before encoding, as the writer queues it: (ts_ns, conn, n, message).
RawFrame = tuple[int, int, int, str | bytes]
_FRAME_LINE = b'{"type":"frame","ts_ns":%d,"conn":%d,"n":%d,"text":%b}\n'
_TS, _CONN, _N, _TEXT = (itemgetter(i) for i in range(4))

# How every frame record's line starts: encode_frame writes it so, and encode_record keeps
# a record's key order with "type" first. Tools count frames from bytes with it.
FRAME_LINE_PREFIX = b'{"type":"frame",'


_encode_utf8 = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_encode_ascii = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode

Record = dict[str, Any]


def encode_record(record: Record) -> bytes:
    """One record as a line of bytes, ``\\n`` included."""
    text = _encode_utf8(record)
    try:
        return text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        # A lone surrogate: escape it (and all non-ASCII) so the line is valid UTF-8.
        return _encode_ascii(record).encode("ascii") + b"\n"


def decode_line(line: bytes) -> Record:
    """Parse one line (without or with its ``\\n``). Raises ValueError when it is not a
    JSON object with a string ``type``."""
    record = json.loads(line.decode("utf-8"))
    if not isinstance(record, dict) or not isinstance(record.get("type"), str):
        raise ValueError("line is not a JSON object with a string 'type'")
    return record


def count_lines(data: bytes) -> int:
    """The records in ``data``, whole lines each ending in ``\\n`` (a batch's bytes)."""
    return data.count(b"\n")


def count_frame_lines(data: bytes) -> int:
    """The lines of ``data`` that start with FRAME_LINE_PREFIX: every frame record the
    writer emits, counted without decoding a line (JSON text holds no raw newline)."""
    return data.count(b"\n" + FRAME_LINE_PREFIX) + data.startswith(FRAME_LINE_PREFIX)


def segment_header(seq: int, created_ns: int, writer: str, host: str | None = None) -> Record:
    return {
        "type": "segment",
        "v": FORMAT_VERSION,
        "seq": seq,
        "created_ns": created_ns,
        "host": host if host is not None else socket.gethostname(),
        "writer": writer,
    }


def frame(ts_ns: int, conn: int, n: int, message: str | bytes) -> Record:
    """A received WebSocket message: text kept verbatim, binary as base64."""
    if isinstance(message, str):
        return {"type": "frame", "ts_ns": ts_ns, "conn": conn, "n": n, "text": message}
    return {
        "type": "frame",
        "ts_ns": ts_ns,
        "conn": conn,
        "n": n,
        "b64": base64.b64encode(message).decode("ascii"),
    }


def encode_frame(ts_ns: int, conn: int, n: int, message: str | bytes) -> bytes:
    """``encode_record(frame(...))``, byte for byte, about 3x faster (the capture hot path)."""
    if isinstance(message, str):
        line = f'{{"type":"frame","ts_ns":{ts_ns},"conn":{conn},"n":{n},"text":'
        try:
            return (line + encode_basestring(message) + "}\n").encode("utf-8")
        except UnicodeEncodeError:
            pass  # a lone surrogate: the general path escapes it
    return encode_record(frame(ts_ns, conn, n, message))


def encode_frames(frames: list[RawFrame]) -> bytes:
    """``b"".join(encode_frame(*f) for f in frames)``, byte for byte: the writer thread
    encodes a whole batch at once, so the receive loop encodes nothing.

    In C where it is built (wal/_encode.c), with the GIL released while the lines are
    written, so the receive loop runs meanwhile; else in a few C calls of orjson (which
    escapes a string exactly as ``json`` does with ``ensure_ascii=False``).
    """
    if _c_frames is not None and type(frames) is list:
        lines = _c_frames(frames)
        if lines is not None:  # None: binary, a lone surrogate or another odd item
            return lines
    return py_encode_frames(frames)


def py_encode_frames(frames: list[RawFrame]) -> bytes:
    """:func:`encode_frames` without the C encoder (the reference it is held to)."""
    try:
        escaped = map(orjson.dumps, map(_TEXT, frames))
        fields = zip(map(_TS, frames), map(_CONN, frames), map(_N, frames), escaped, strict=True)
        return b"".join(map(_FRAME_LINE.__mod__, fields))
    except TypeError:  # a lone surrogate (orjson refuses it) or a binary message
        return b"".join(encode_frame(*f) for f in frames)


def frame_payload(record: Record) -> str | bytes:
    """The message a ``frame`` record holds, as received (str for text, bytes for binary)."""
    if "text" in record:
        return str(record["text"])
    return base64.b64decode(record["b64"])


def sent(ts_ns: int, conn: int, text: str) -> Record:
    return {"type": "sent", "ts_ns": ts_ns, "conn": conn, "text": text}


def conn_open(ts_ns: int, conn: int, url: str) -> Record:
    return {"type": "conn_open", "ts_ns": ts_ns, "conn": conn, "url": url}


def conn_close(
    ts_ns: int, conn: int, url: str, code: int | None, reason: str, error: str | None = None
) -> Record:
    record: Record = {
        "type": "conn_close",
        "ts_ns": ts_ns,
        "conn": conn,
        "url": url,
        "code": code,
        "reason": reason,
    }
    if error is not None:
        record["error"] = error
    return record


def stall(ts_ns: int, conn: int, kind: str, silent_s: float) -> Record:
    return {"type": "stall", "ts_ns": ts_ns, "conn": conn, "kind": kind, "silent_s": silent_s}


def meta(ts_ns: int, source: str, text: str) -> Record:
    """Metadata fetched from elsewhere (``source``, a URL), its text verbatim."""
    return {"type": "meta", "ts_ns": ts_ns, "source": source, "text": text}


def dropped(ts_ns: int, count: int, reason: str) -> Record:
    return {"type": "dropped", "ts_ns": ts_ns, "count": count, "reason": reason}


def seal(
    ts_ns: int, records: int, frames: int, *, recovered: bool = False, truncated_bytes: int = 0
) -> Record:
    record: Record = {"type": "seal", "ts_ns": ts_ns, "records": records, "frames": frames}
    if recovered:
        record["recovered"] = True
        record["truncated_bytes"] = truncated_bytes
    return record


def _encodes_as_python(built: Any) -> bool:
    """The C encoder writes what this module does (a stale build may not)."""
    sample: list[RawFrame] = [(1, 2, 3, 'x"\\\n\x01\u00e9'), (-4, 5, 6, "")]
    return bool(built.frames(sample) == py_encode_frames(sample))


_encode = native.module("wal._encode", _encodes_as_python)
_c_frames: Callable[[list[RawFrame]], bytes | None] | None = (
    _encode.frames if _encode is not None else None
)
ACCELERATED = _c_frames is not None
