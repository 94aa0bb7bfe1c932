"""Schema for order books and market metadata (one migration), and ``book_at``.

Book rows are stored like trades: in ``*_rows`` tables with the 8-byte token key of
``token_keys`` and hashes as bytes, behind views whose columns are the contract
(``book_snapshots``, ``price_changes``, ``best_bid_ask``, ``tick_size_changes``). Each
storage table has ``(token, ts DESC)`` for per-token time queries and a BRIN index on
``segment_id`` for reparse, as ``trade_rows`` does. ``wal_segments`` gains the book
progress of each segment (``books_offset``: the byte offset up to which its book rows
are loaded), so ``--books`` switched on later backfills exactly once.

Market metadata: every observation (a Gamma object from a ``meta`` record, a
``new_market`` or ``market_resolved`` frame) is a row of ``market_observations`` with
its segment; ``markets`` and ``tokens`` are rebuilt from the observations of the
markets a transaction touched, each field from the latest observation that has it
(by receive time), so the result depends on the WAL only, never on load order.
"""

from __future__ import annotations

import psycopg

from loader.timescale import Plan

BOOK_TABLES = (
    "book_snapshot_rows",
    "price_change_rows",
    "best_bid_ask_rows",
    "tick_size_change_rows",
)

_TABLES = (
    """CREATE TABLE book_snapshot_rows (
    ts          timestamptz NOT NULL,
    token       bigint NOT NULL,       -- token_keys.id
    received_at timestamptz NOT NULL,
    segment_id  bigint NOT NULL,       -- wal_segments.id
    bids_price  float8[] NOT NULL,     -- best (highest) first
    bids_size   float8[] NOT NULL,
    asks_price  float8[] NOT NULL,     -- best (lowest) first
    asks_size   float8[] NOT NULL,
    hash        bytea,                 -- a lower-case hex hash, as its bytes
    hash_text   text                   -- any other hash, verbatim
)""",
    # Fixed-width columns first: no alignment padding between them.
    """CREATE TABLE price_change_rows (
    ts          timestamptz NOT NULL,
    token       bigint NOT NULL,
    price       float8 NOT NULL,
    size        float8 NOT NULL,       -- the new total at this level; 0 removes it
    best_bid    float8,
    best_ask    float8,
    received_at timestamptz NOT NULL,
    segment_id  bigint NOT NULL,
    buy         boolean NOT NULL,      -- side = 'BUY' (a bid level)
    hash        bytea,
    hash_text   text
)""",
    """CREATE TABLE best_bid_ask_rows (
    ts          timestamptz NOT NULL,
    token       bigint NOT NULL,
    best_bid    float8,
    best_ask    float8,
    spread      float8,
    received_at timestamptz NOT NULL,
    segment_id  bigint NOT NULL
)""",
    """CREATE TABLE tick_size_change_rows (
    ts            timestamptz NOT NULL,
    token         bigint NOT NULL,
    old_tick_size float8,
    new_tick_size float8 NOT NULL,
    received_at   timestamptz NOT NULL,
    segment_id    bigint NOT NULL
)""",
)

_HASH = "coalesce(encode(r.hash, 'hex'), r.hash_text) AS hash"
_VIEWS = (
    f"""CREATE VIEW book_snapshots AS
SELECT r.ts, k.token_id, k.market, r.bids_price, r.bids_size, r.asks_price, r.asks_size,
       {_HASH}, r.received_at, r.segment_id
  FROM book_snapshot_rows r JOIN token_keys k ON k.id = r.token""",
    f"""CREATE VIEW price_changes AS
SELECT r.ts, k.token_id, k.market, CASE WHEN r.buy THEN 'BUY' ELSE 'SELL' END AS side,
       r.price, r.size, r.best_bid, r.best_ask, {_HASH}, r.received_at, r.segment_id
  FROM price_change_rows r JOIN token_keys k ON k.id = r.token""",
    """CREATE VIEW best_bid_ask AS
SELECT r.ts, k.token_id, k.market, r.best_bid, r.best_ask, r.spread, r.received_at,
       r.segment_id
  FROM best_bid_ask_rows r JOIN token_keys k ON k.id = r.token""",
    """CREATE VIEW tick_size_changes AS
SELECT r.ts, k.token_id, k.market, r.old_tick_size, r.new_tick_size, r.received_at,
       r.segment_id
  FROM tick_size_change_rows r JOIN token_keys k ON k.id = r.token""",
)

_SEGMENT_COLUMNS = """ALTER TABLE wal_segments
    ADD COLUMN books_offset   bigint NOT NULL DEFAULT 0,  -- book rows loaded up to here
    ADD COLUMN book_rows      bigint NOT NULL DEFAULT 0,
    ADD COLUMN book_errors    bigint NOT NULL DEFAULT 0,  -- invalid book events
    ADD COLUMN books_first_at timestamptz,                -- bounds reparse's DELETE
    ADD COLUMN books_last_at  timestamptz,
    ADD COLUMN markets_seen   bigint NOT NULL DEFAULT 0   -- market observations"""

_MARKETS = (
    """CREATE TABLE market_observations (
    condition_id     text NOT NULL,
    observed_at      timestamptz NOT NULL,  -- the record's receive time (ts_ns)
    source           text NOT NULL,         -- 'gamma', 'new_market', 'market_resolved'
    question         text,
    slug             text,
    event_slug       text,
    outcomes         text[],
    token_ids        text[],
    active           boolean,
    closed           boolean,
    end_date         timestamptz,
    resolved_at      timestamptz,
    winning_token_id text,
    segment_id       bigint NOT NULL
)""",
    "CREATE INDEX market_observations_market ON market_observations (condition_id)",
    "CREATE INDEX market_observations_segment ON market_observations (segment_id)",
    """CREATE TABLE markets (
    condition_id     text PRIMARY KEY,
    question         text,
    slug             text,
    event_slug       text,
    outcomes         text[],
    token_ids        text[],
    active           boolean,
    closed           boolean,
    end_date         timestamptz,
    resolved_at      timestamptz,
    winning_token_id text,
    first_seen_at    timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
)""",
    """CREATE TABLE tokens (
    token_id      text PRIMARY KEY,
    condition_id  text NOT NULL,
    outcome       text,
    outcome_index integer NOT NULL
)""",
    "CREATE INDEX tokens_market ON tokens (condition_id)",
)

# The book of a token at a moment: the last snapshot at or before it, with every price
# change after it (by event time, then receive time) applied; absolute sizes, 0 deletes.
_BOOK_AT = """
CREATE FUNCTION book_at(p_token_id text, p_at timestamptz)
RETURNS TABLE (side text, price float8, size float8, snapshot_ts timestamptz,
               snapshot_received_at timestamptz, changes_applied bigint)
LANGUAGE sql STABLE AS $$
WITH k AS (SELECT id FROM token_keys WHERE token_id = p_token_id),
snap AS (
    SELECT s.* FROM book_snapshot_rows s
     WHERE s.token IN (SELECT id FROM k) AND s.ts <= p_at
     ORDER BY s.ts DESC, s.received_at DESC LIMIT 1),
ch AS (
    SELECT c.buy, c.price, c.size, c.ts, c.received_at FROM price_change_rows c, snap
     WHERE c.token IN (SELECT id FROM k) AND c.ts <= p_at AND c.ts >= snap.ts
       AND (c.ts, c.received_at) > (snap.ts, snap.received_at)),
latest AS (
    SELECT DISTINCT ON (buy, price) buy, price, size FROM ch
     ORDER BY buy, price, ts DESC, received_at DESC),
levels AS (
    SELECT true AS buy, u.price, u.size
      FROM snap, unnest(snap.bids_price, snap.bids_size) AS u(price, size)
    UNION ALL
    SELECT false, u.price, u.size
      FROM snap, unnest(snap.asks_price, snap.asks_size) AS u(price, size)),
merged AS (
    SELECT coalesce(c.buy, l.buy) AS buy, coalesce(c.price, l.price) AS price,
           CASE WHEN c.price IS NULL THEN l.size ELSE c.size END AS size
      FROM levels l FULL JOIN latest c ON c.buy = l.buy AND c.price = l.price)
SELECT CASE WHEN m.buy THEN 'BUY' ELSE 'SELL' END, m.price, m.size, snap.ts,
       snap.received_at, (SELECT count(*) FROM ch)
  FROM merged m, snap
 WHERE m.size > 0
 ORDER BY m.buy DESC, CASE WHEN m.buy THEN -m.price ELSE m.price END
$$"""


def migration(conn: psycopg.Connection, plan: Plan) -> None:
    """Book tables, their views, book progress per segment, market metadata, book_at.

    TimescaleDB objects for the book tables follow the plan in
    :func:`loader.bookhypertables.converge`, run by every init-db.
    """
    del plan  # hypertables are converged afterwards, as for trade_rows
    for statement in _TABLES:
        conn.execute(statement)
    for table in BOOK_TABLES:
        conn.execute(f"CREATE INDEX {table}_token_ts ON {table} (token, ts DESC)")
        conn.execute(f"CREATE INDEX {table}_segment ON {table} USING brin (segment_id)")
    for statement in _VIEWS:
        conn.execute(statement)
    conn.execute(_SEGMENT_COLUMNS)
    for statement in _MARKETS:
        conn.execute(statement)
    conn.execute(_BOOK_AT)
