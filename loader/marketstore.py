"""SQL for market metadata: observations of a segment, and ``markets``/``tokens`` rebuilt
from them for the markets a transaction touched (inside the caller's transaction)."""

from __future__ import annotations

import psycopg

from loader.markets import MarketObservation

_INSERT = """INSERT INTO market_observations (condition_id, observed_at, source, question,
    slug, event_slug, outcomes, token_ids, active, closed, end_date, resolved_at,
    winning_token_id, segment_id)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"""

_FIELDS = (
    "question",
    "slug",
    "event_slug",
    "outcomes",
    "token_ids",
    "active",
    "closed",
    "end_date",
    "resolved_at",
    "winning_token_id",
)
# Each field from the latest observation that has it; arrays go through text because
# array_agg of arrays would build a two-dimensional array.
_LATEST = ",\n".join(
    f"(array_agg({f}{'::text' if f in ('outcomes', 'token_ids') else ''}"
    f" ORDER BY observed_at DESC, source) FILTER (WHERE {f} IS NOT NULL))[1]"
    f"{'::text[]' if f in ('outcomes', 'token_ids') else ''} AS {f}"
    for f in _FIELDS
)
_REFRESH = f"""INSERT INTO markets (condition_id, {", ".join(_FIELDS)}, first_seen_at, updated_at)
SELECT condition_id, {_LATEST}, min(observed_at), max(observed_at)
  FROM market_observations WHERE condition_id = ANY(%(ids)s) GROUP BY condition_id
ON CONFLICT (condition_id) DO UPDATE SET
{", ".join(f"{f} = EXCLUDED.{f}" for f in _FIELDS)},
first_seen_at = EXCLUDED.first_seen_at, updated_at = EXCLUDED.updated_at"""

_TOKENS = """INSERT INTO tokens (token_id, condition_id, outcome, outcome_index)
SELECT DISTINCT ON (t.token_id) t.token_id, m.condition_id, m.outcomes[t.i], (t.i - 1)::int
  FROM markets m, unnest(m.token_ids) WITH ORDINALITY AS t(token_id, i)
 WHERE m.condition_id = ANY(%(ids)s)
 ORDER BY t.token_id, m.updated_at DESC
ON CONFLICT (token_id) DO UPDATE SET condition_id = EXCLUDED.condition_id,
    outcome = EXCLUDED.outcome, outcome_index = EXCLUDED.outcome_index"""


def write(
    conn: psycopg.Connection,
    segment_id: int,
    found: list[MarketObservation],
    also: set[str] | None = None,
) -> None:
    """Store the observations of a segment and rebuild the markets they (and ``also``) name."""
    ids = {obs.condition_id for obs in found} | (also or set())
    if found:
        with conn.cursor() as cur:
            cur.executemany(_INSERT, [(*obs, segment_id) for obs in found])
        conn.execute(
            "UPDATE wal_segments SET markets_seen = markets_seen + %s WHERE id = %s",
            (len(found), segment_id),
        )
    if ids:
        refresh(conn, sorted(ids))


def refresh(conn: psycopg.Connection, ids: list[str]) -> None:
    """Rebuild ``markets`` and ``tokens`` rows of ``ids`` from their observations."""
    conn.execute("DELETE FROM tokens WHERE condition_id = ANY(%(ids)s)", {"ids": ids})
    conn.execute(
        "DELETE FROM markets m WHERE condition_id = ANY(%(ids)s) AND NOT EXISTS"
        " (SELECT 1 FROM market_observations o WHERE o.condition_id = m.condition_id)",
        {"ids": ids},
    )
    conn.execute(_REFRESH, {"ids": ids})
    conn.execute(_TOKENS, {"ids": ids})


def reset(conn: psycopg.Connection, segment_id: int) -> set[str]:
    """Delete the segment's observations (reparse); returns the markets they named."""
    rows = conn.execute(
        "DELETE FROM market_observations WHERE segment_id = %s RETURNING condition_id",
        (segment_id,),
    ).fetchall()
    conn.execute("UPDATE wal_segments SET markets_seen = 0 WHERE id = %s", (segment_id,))
    return {row[0] for row in rows}
