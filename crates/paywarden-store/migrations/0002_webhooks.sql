-- paywarden: expand
-- Events and their webhook deliveries: the transactional outbox. An event is inserted in the
-- same transaction as the change it describes, and so are its deliveries, one per enabled
-- endpoint of the merchant whose `events_filter` matches its type (`,*,` or `,type,`): an
-- acknowledged change always has its deliveries queued on disk, and a crash loses none.

CREATE TABLE events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    merchant_id TEXT NOT NULL,
    type        TEXT NOT NULL,
    created     INTEGER NOT NULL,
    -- The event exactly as it is delivered (Stripe's shape).
    data        TEXT NOT NULL
) STRICT;
CREATE INDEX events_merchant_seq ON events (merchant_id, seq);
CREATE INDEX events_merchant_type_seq ON events (merchant_id, type, seq);

CREATE TABLE webhook_endpoints (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT NOT NULL UNIQUE,
    merchant_id   TEXT NOT NULL,
    created       INTEGER NOT NULL,
    url           TEXT NOT NULL,
    -- `enabled` or `disabled`.
    status        TEXT NOT NULL,
    -- `,*,` or `,type,type,`: matched with instr() when an event fans out.
    events_filter TEXT NOT NULL,
    data          TEXT NOT NULL
) STRICT;
CREATE INDEX webhook_endpoints_merchant_seq ON webhook_endpoints (merchant_id, seq);

-- One row per (endpoint, event): the queue. Times in unix milliseconds.
CREATE TABLE webhook_deliveries (
    endpoint_id     TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    merchant_id     TEXT NOT NULL,
    -- `pending`, `delivered` or `failed` (gave up at the retry horizon).
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    created         INTEGER NOT NULL,
    last_attempt_at INTEGER,
    last_status     INTEGER,
    last_error      TEXT,
    PRIMARY KEY (endpoint_id, event_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id);
