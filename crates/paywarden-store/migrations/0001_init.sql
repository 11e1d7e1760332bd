-- paywarden: expand
-- paywarden's first schema. Objects are stored whole as the serde_json of their
-- paywarden-core struct (`data`); the columns beside it are the ones queries filter or
-- order on. `seq` (AUTOINCREMENT, so never reused) orders lists newest first and backs the
-- pagination cursors. Tables are STRICT: a value of the wrong type is an error, not a
-- silent conversion. Tables looked up only by their key (ledger entries, idempotency
-- records) are WITHOUT ROWID: one B-tree instead of a table plus a key index, so a group
-- commit writes fewer pages.

CREATE TABLE merchants (
    id      TEXT PRIMARY KEY NOT NULL,
    name    TEXT NOT NULL UNIQUE,
    created INTEGER NOT NULL
) STRICT;

CREATE TABLE api_keys (
    hash        BLOB PRIMARY KEY NOT NULL,
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    prefix      TEXT NOT NULL,
    created     INTEGER NOT NULL
) STRICT;
CREATE INDEX api_keys_merchant ON api_keys (merchant_id);

CREATE TABLE payment_methods (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    merchant_id TEXT NOT NULL,
    created     INTEGER NOT NULL,
    data        TEXT NOT NULL
) STRICT;
CREATE INDEX payment_methods_merchant_seq ON payment_methods (merchant_id, seq);

CREATE TABLE payment_intents (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    merchant_id TEXT NOT NULL,
    created     INTEGER NOT NULL,
    version     INTEGER NOT NULL,
    status      TEXT NOT NULL,
    data        TEXT NOT NULL
) STRICT;
CREATE INDEX payment_intents_merchant_seq ON payment_intents (merchant_id, seq);

CREATE TABLE charges (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    merchant_id TEXT NOT NULL,
    created     INTEGER NOT NULL,
    data        TEXT NOT NULL
) STRICT;
CREATE INDEX charges_merchant_seq ON charges (merchant_id, seq);

CREATE TABLE refunds (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT NOT NULL UNIQUE,
    merchant_id    TEXT NOT NULL,
    payment_intent TEXT NOT NULL,
    -- Copied from `data` so the ledger audit can sum refunds per intent in SQL.
    amount         INTEGER NOT NULL,
    created        INTEGER NOT NULL,
    data           TEXT NOT NULL
) STRICT;
CREATE INDEX refunds_merchant_seq ON refunds (merchant_id, seq);
CREATE INDEX refunds_merchant_intent_seq ON refunds (merchant_id, payment_intent, seq);

-- One row per leg of a posting; amounts are signed minor units (debit positive).
CREATE TABLE ledger_entries (
    posting_id     TEXT NOT NULL,
    leg            INTEGER NOT NULL,
    merchant_id    TEXT NOT NULL,
    currency       TEXT NOT NULL,
    account        TEXT NOT NULL,
    amount         INTEGER NOT NULL,
    payment_intent TEXT NOT NULL,
    kind           TEXT NOT NULL,
    created        INTEGER NOT NULL,
    PRIMARY KEY (posting_id, leg)
) STRICT, WITHOUT ROWID;
CREATE INDEX ledger_entries_payment_intent ON ledger_entries (payment_intent);

CREATE TABLE idempotency_keys (
    merchant_id  TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash BLOB NOT NULL,
    status       INTEGER NOT NULL,
    body         BLOB NOT NULL,
    created      INTEGER NOT NULL,
    PRIMARY KEY (merchant_id, key)
) STRICT, WITHOUT ROWID;
CREATE INDEX idempotency_keys_created ON idempotency_keys (created);
