"""The status file: what the daemon is doing, rewritten atomically every few seconds and
read by ``capture status``. Building, reading and rendering it is pure; writing it
goes through ``wal.write_durably``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from capture.errors import StatusError
from wal import write_durably

if TYPE_CHECKING:
    from capture.connection import Connection
    from wal import WriterStats

STATUS_NAME = "capture.status.json"  # not a segment name, so WAL listings ignore it
STALE_AFTER_INTERVALS = 5  # a status older than 5 write intervals means the daemon is stuck


WAL_FIELDS = (
    "appended",
    "durable",
    "dropped_total",
    "segments_sealed",
    "buffered_bytes",
    "write_errors",
    "last_error",
    "current_segment",
    "last_fsync_s",
)


def build(
    *,
    state: str,
    started_ns: int,
    interval_s: float,
    url: str,
    assets: int,
    connections: Iterable[Connection],
    frames_per_s: float,
    wal_stats: WriterStats | None,
    fatal_error: str | None,
    now: float,
) -> dict[str, Any]:
    """The status document (``now`` is monotonic, for the ages of last frames)."""
    conns = [conn_status(c, now) for c in connections]
    wal: dict[str, Any] = {}
    if wal_stats is not None:
        wal = {k: getattr(wal_stats, k) for k in WAL_FIELDS}
        wal["fatal_error"] = fatal_error
    now_ns = time.time_ns()
    return {
        "pid": os.getpid(),
        "state": state,
        "updated_ns": now_ns,
        "started_ns": started_ns,
        "uptime_s": (now_ns - started_ns) / 1e9,
        "interval_s": interval_s,
        "url": url,
        "assets": assets,
        "frames": sum(c["frames"] for c in conns),
        "frames_per_s": round(frames_per_s, 1),
        "connections_up": sum(1 for c in conns if c["state"] == "up"),
        "connections": conns,
        "wal": wal,
    }


def conn_status(conn: Connection, now: float) -> dict[str, Any]:
    st = conn.stats
    age = None if st.last_frame_at is None else round(now - st.last_frame_at, 3)
    return {
        "id": conn.id,
        "shard": conn.shard,
        "replica": conn.replica,
        "state": st.state,
        "assets": len(conn.assets),
        "asset_ids": list(conn.assets),
        "frames": st.frames,
        "bytes": st.bytes,
        "connects": st.connects,
        "up_since_ns": st.up_since_ns,
        "last_frame_age_s": age,
        "reconnects": dict(st.reconnects),
        "stalls": dict(st.stalls),
        "last_close": st.last_close,
    }


def status_path(wal_dir: Path) -> Path:
    return Path(wal_dir) / STATUS_NAME


def write_status(wal_dir: Path, doc: dict[str, Any]) -> None:
    write_durably(status_path(wal_dir), json.dumps(doc, indent=1, sort_keys=True).encode())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_status(wal_dir: Path, now_ns: int) -> dict[str, Any]:
    """The status document if the daemon is running and the file is fresh, else StatusError."""
    path = status_path(wal_dir)
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise StatusError(
            f"no status file {path}: capture has not run with --wal-dir {wal_dir} "
            "(check the directory, or start it: capture run --wal-dir ...)"
        ) from None
    except (OSError, ValueError) as exc:
        raise StatusError(f"cannot read status file {path}: {exc}") from None
    check_fresh(doc, now_ns, pid_alive(int(doc.get("pid", 0) or 0)), path)
    return doc


def check_fresh(doc: dict[str, Any], now_ns: int, alive: bool, path: Path) -> None:
    age = (now_ns - int(doc.get("updated_ns", 0))) / 1e9
    fatal = (doc.get("wal") or {}).get("fatal_error")
    if doc.get("state") in ("stopped", "failed") or not alive:
        died = f"; its WAL writer died: {fatal}" if fatal else ""
        raise StatusError(
            f"capture is not running (pid {doc.get('pid')}, {path} last written "
            f"{age:.0f}s ago, state {doc.get('state')!r}{died}); start it or check its "
            "service logs"
        )
    limit = float(doc.get("interval_s", 2.0)) * STALE_AFTER_INTERVALS
    if age > limit:
        raise StatusError(
            f"capture (pid {doc.get('pid')}) has not updated {path} for {age:.0f}s "
            f"(limit {limit:.0f}s): it is stuck or its disk is; check its logs"
        )


def render(doc: dict[str, Any]) -> str:
    """A human summary of a status document."""
    wal = doc.get("wal", {})
    lines = [
        f"capture pid {doc['pid']}, {doc['state']}, up {doc['uptime_s']:.0f}s, "
        f"{doc['assets']} assets on {len(doc['connections'])} connections "
        f"({doc['connections_up']} up)",
        f"frames/s {doc['frames_per_s']:.1f}, frames {doc['frames']}, "
        f"dropped {wal.get('dropped_total', 0)}, segment {wal.get('current_segment')}, "
        f"sealed {wal.get('segments_sealed', 0)}, buffered {wal.get('buffered_bytes', 0)} B",
    ]
    if wal.get("fatal_error"):
        lines.append(f"WAL WRITER DIED (capture is exiting): {wal['fatal_error']}")
    elif wal.get("last_error"):
        lines.append(f"WAL ERROR ({wal.get('write_errors')} so far): {wal['last_error']}")
    lines.append(
        f"{'conn':>4} {'shard/rep':>9}  {'state':<10} {'assets':>6} {'frames':>10} "
        f"{'last frame':>11}"
    )
    for conn in doc["connections"]:
        age = conn.get("last_frame_age_s")
        age_text = "-" if age is None else f"{age:.1f}s ago"
        place = f"{conn.get('shard', conn['id'])}/{conn.get('replica', 0)}"
        lines.append(
            f"{conn['id']:>4} {place:>9}  {conn['state']:<10} {conn['assets']:>6} "
            f"{conn['frames']:>10} {age_text:>11}"
        )
    return "\n".join(lines)
