-- paywarden: expand
-- paywarden's schema on PostgreSQL: the SQLite schema (migrations/0001..0003) in one step,
-- with PostgreSQL's types. Objects are stored whole as the serde_json of their paywarden-core
-- struct (`data`, TEXT: stored and returned byte for byte); the columns beside it are the
-- ones queries filter or order on. Every integer is BIGINT (sqlx decodes i64 from BIGINT
-- only). `seq` (BIGSERIAL) orders lists newest first and backs the pagination cursors.

CREATE TABLE merchants (
    id      TEXT PRIMARY KEY,
    name    TEXT NOT NULL UNIQUE,
    created BIGINT NOT NULL
);

CREATE TABLE api_keys (
    hash        BYTEA PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    prefix      TEXT NOT NULL,
    created     BIGINT NOT NULL
);
CREATE INDEX api_keys_merchant ON api_keys (merchant_id);

CREATE TABLE payment_methods (
    seq         BIGSERIAL PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    merchant_id TEXT NOT NULL,
    created     BIGINT NOT NULL,
    data        TEXT NOT NULL
);
CREATE INDEX payment_methods_merchant_seq ON payment_methods (merchant_id, seq);

CREATE TABLE payment_intents (
    seq         BIGSERIAL PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    merchant_id TEXT NOT NULL,
    created     BIGINT NOT NULL,
    version     BIGINT NOT NULL,
    status      TEXT NOT NULL,
    data        TEXT NOT NULL
);
CREATE INDEX payment_intents_merchant_seq ON payment_intents (merchant_id, seq);

CREATE TABLE charges (
    seq         BIGSERIAL PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    merchant_id TEXT NOT NULL,
    created     BIGINT NOT NULL,
    data        TEXT NOT NULL
);
CREATE INDEX charges_merchant_seq ON charges (merchant_id, seq);

CREATE TABLE refunds (
    seq            BIGSERIAL PRIMARY KEY,
    id             TEXT NOT NULL UNIQUE,
    merchant_id    TEXT NOT NULL,
    payment_intent TEXT NOT NULL,
    amount         BIGINT NOT NULL,
    created        BIGINT NOT NULL,
    data           TEXT NOT NULL
);
CREATE INDEX refunds_merchant_seq ON refunds (merchant_id, seq);
CREATE INDEX refunds_merchant_intent_seq ON refunds (merchant_id, payment_intent, seq);

CREATE TABLE ledger_entries (
    posting_id     TEXT NOT NULL,
    leg            BIGINT NOT NULL,
    merchant_id    TEXT NOT NULL,
    currency       TEXT NOT NULL,
    account        TEXT NOT NULL,
    amount         BIGINT NOT NULL,
    payment_intent TEXT NOT NULL,
    kind           TEXT NOT NULL,
    created        BIGINT NOT NULL,
    PRIMARY KEY (posting_id, leg)
);
CREATE INDEX ledger_entries_payment_intent ON ledger_entries (payment_intent);

CREATE TABLE idempotency_keys (
    merchant_id  TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash BYTEA NOT NULL,
    status       BIGINT NOT NULL,
    body         BYTEA NOT NULL,
    created      BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created);

-- Events: the outbox. `seq` is the insertion order (lists, pagination). Insertion order is not
-- commit order when several transactions write at once, so a delivery cursor over `seq` could
-- pass an event whose transaction commits late. `dseq` is the delivery order: NULL when
-- written, assigned in commit order by the sequencer (one transaction at a time, under an
-- advisory lock, to the events it can see), and it is what endpoint cursors point into.
CREATE SEQUENCE events_dseq;
CREATE TABLE events (
    seq         BIGSERIAL PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    merchant_id TEXT NOT NULL,
    type        TEXT NOT NULL,
    created     BIGINT NOT NULL,
    data        TEXT NOT NULL,
    dseq        BIGINT UNIQUE
);
CREATE INDEX events_merchant_seq ON events (merchant_id, seq);
CREATE INDEX events_merchant_type_seq ON events (merchant_id, type, seq);
CREATE INDEX events_merchant_dseq ON events (merchant_id, dseq);
CREATE INDEX events_unsequenced ON events (seq) WHERE dseq IS NULL;

CREATE TABLE webhook_endpoints (
    seq           BIGSERIAL PRIMARY KEY,
    id            TEXT NOT NULL UNIQUE,
    merchant_id   TEXT NOT NULL,
    created       BIGINT NOT NULL,
    url           TEXT NOT NULL,
    status        TEXT NOT NULL,
    events_filter TEXT NOT NULL,
    data          TEXT NOT NULL,
    -- The `events.dseq` up to which this endpoint's events are claimed.
    cursor_seq    BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX webhook_endpoints_merchant_seq ON webhook_endpoints (merchant_id, seq);

CREATE TABLE webhook_deliveries (
    endpoint_id     TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    merchant_id     TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    created         BIGINT NOT NULL,
    last_attempt_at BIGINT,
    last_status     BIGINT,
    last_error      TEXT,
    PRIMARY KEY (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id);
