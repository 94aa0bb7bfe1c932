"""SQL for the coverage state and the gaps (schema v4). Runs inside the loader's
transaction, so gaps, the carried state, trades and the offset commit together.

Where the state comes from: a segment resumed at a committed offset reads its own row
of ``segment_carry`` (written with that offset); a segment started at byte 0 (first
load or reparse) reads the row of the segment before it by name. A segment first loaded
while the one before it was not (``unreadable``) starts from no state: reparse it once
the earlier one loaded.

How a gap is stored (``gap_rows``, read through the ``gaps`` view): each segment writes
the gaps that ended in it and, when it is finished, the gaps still open at its end
(``ended_at`` NULL). One gap is identified by ``(shard, started_at)``; the view shows
the ended row if there is one, else the open row of the latest segment (a gap open over
k segment ends leaves k open rows; they are few: one per segment of an outage). A reparse of a
segment deletes and rewrites only its own rows, from the same carried state, so the
view shows the same gaps afterwards; no row of another segment is ever updated.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from loader.coverage import Coverage
from loader.gaps import Gap

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_OWN_STATE = "SELECT state, last_ns FROM segment_carry WHERE segment_id = %s"
# The segment just before by name (the loader loads in name order), with its state if any.
_PREVIOUS_STATE = """
SELECT c.state, c.last_ns FROM
  (SELECT id FROM wal_segments WHERE name < %s ORDER BY name DESC LIMIT 1) p
  LEFT JOIN segment_carry c ON c.segment_id = p.id"""


def ns_time(ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ns // 1000)


def load(conn: psycopg.Connection, segment_id: int, name: str, offset: int) -> Coverage:
    """The state at ``offset`` of the segment: its own (offset > 0) or its predecessor's."""
    if offset > 0:
        row = conn.execute(_OWN_STATE, (segment_id,)).fetchone()
        fresh = False
    else:
        row = conn.execute(_PREVIOUS_STATE, (name,)).fetchone()
        fresh = True
    if row is None or row[0] is None:
        return Coverage()
    coverage = Coverage.from_json(row[0])
    coverage.tracker.see(row[1])
    coverage.changed = fresh  # a new segment writes its first row in full
    return coverage


def save(conn: psycopg.Connection, segment_id: int, coverage: Coverage) -> None:
    """The state after the transaction's last batch; in full only when it changed (the
    steady state of one replica per shard moves ``last_ns`` alone)."""
    if coverage.changed:
        conn.execute(
            "INSERT INTO segment_carry (segment_id, state, last_ns) VALUES (%s, %s, %s)"
            " ON CONFLICT (segment_id) DO UPDATE SET state = excluded.state,"
            " last_ns = excluded.last_ns",
            (segment_id, Jsonb(coverage.to_json()), coverage.last_ns),
        )
        coverage.changed = False
    else:
        conn.execute(
            "UPDATE segment_carry SET last_ns = %s WHERE segment_id = %s",
            (coverage.last_ns, segment_id),
        )


def write_gaps(conn: psycopg.Connection, segment_id: int, gaps: list[Gap]) -> None:
    if not gaps:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO gap_rows (segment_id, shard, started_at, ended_at, token_ids, cause)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            [
                (
                    segment_id,
                    g.shard,
                    ns_time(g.started_ns),
                    None if g.ended_ns is None else ns_time(g.ended_ns),
                    list(g.token_ids),
                    g.cause,
                )
                for g in gaps
            ],
        )


def reset(conn: psycopg.Connection, segment_id: int) -> None:
    """Forget a segment's gaps and state (reparse rebuilds both)."""
    conn.execute("DELETE FROM gap_rows WHERE segment_id = %s", (segment_id,))
    conn.execute("DELETE FROM segment_carry WHERE segment_id = %s", (segment_id,))


def gaps_since(
    conn: psycopg.Connection, since: datetime, token: str | None = None
) -> list[dict[str, Any]]:
    """Gaps that ended after ``since`` (or are open), oldest first; of ``token`` if given."""
    rows = conn.execute(
        "SELECT started_at, ended_at, token_ids, cause, segment_id, shard FROM gaps"
        " WHERE (ended_at > %s OR ended_at IS NULL) AND (%s::text IS NULL OR %s = ANY(token_ids))"
        " ORDER BY started_at, shard",
        (since, token, token),
    ).fetchall()
    keys = ("started_at", "ended_at", "token_ids", "cause", "segment_id", "shard")
    return [dict(zip(keys, row, strict=True)) for row in rows]


# Gap time per token within [since, now], overlapping gaps of one token merged.
_TOKEN_GAP_SECONDS = """
SELECT token, extract(epoch FROM sum(upper(r) - lower(r)))::float8 FROM (
  SELECT token, unnest(range_agg(tstzrange(greatest(started_at, %(since)s),
                                           least(coalesce(ended_at, %(now)s), %(now)s))))
         AS r
    FROM gaps, unnest(token_ids) AS token
   WHERE (ended_at > %(since)s OR ended_at IS NULL) AND started_at < %(now)s
   GROUP BY token) t
 GROUP BY token"""


def summary(conn: psycopg.Connection, since: datetime, now: datetime) -> dict[str, Any]:
    """Gaps within [since, now]: count, total seconds, and each affected token's share of
    the window it was covered (tokens not listed were covered all the time)."""
    row = conn.execute(
        "SELECT count(*), coalesce(extract(epoch FROM sum(least(coalesce(ended_at, %(now)s),"
        " %(now)s) - greatest(started_at, %(since)s))), 0)::float8 FROM gaps"
        " WHERE (ended_at > %(since)s OR ended_at IS NULL) AND started_at < %(now)s",
        {"since": since, "now": now},
    ).fetchone()
    window = max((now - since).total_seconds(), 1e-9)
    per_token = conn.execute(_TOKEN_GAP_SECONDS, {"since": since, "now": now}).fetchall()
    coverage = {token: round(max(0.0, 1 - seconds / window), 6) for token, seconds in per_token}
    count, seconds = row if row else (0, 0.0)
    return {"count": int(count), "seconds": round(float(seconds), 3), "coverage": coverage}


def render(gaps: list[dict[str, Any]]) -> str:
    """``loader gaps``: one line per gap (start, end or ``open``, seconds, cause, assets)."""
    if not gaps:
        return "no gaps"
    lines = []
    for g in gaps:
        end = g["ended_at"]
        seconds = f"{(end - g['started_at']).total_seconds():.3f} s" if end else "open"
        tokens = g["token_ids"]
        lines.append(
            f"{g['started_at'].isoformat()}  {end.isoformat() if end else 'open':32}  "
            f"{seconds:>12}  {g['cause']}  {len(tokens)} assets: {' '.join(tokens)}"
        )
    return "\n".join(lines)


def to_json(gaps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        g | {"started_at": g["started_at"].isoformat(), "ended_at": _iso(g["ended_at"])}
        for g in gaps
    ]


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
