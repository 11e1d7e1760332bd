-- paywarden: contract
-- Idempotency records move from a WITHOUT ROWID table to a rowid table with a unique key
-- index. Each record holds the whole first response (about 1.5 KB for a payment), and
-- SQLite's guidance for WITHOUT ROWID is rows under about 1/20 of a page: at 1.5 KB only two
-- fit in a 4-KiB leaf, and keys chosen by clients (UUIDs, counters) land anywhere in the key
-- order, so every payment dirtied a leaf of its own and split one every other insert, and a
-- group commit wrote those whole pages to the WAL. Now the records append at the table's
-- right end (pages shared by the group) and only a small index entry lands at the key's place.
CREATE TABLE idempotency_keys_new (
    seq          INTEGER PRIMARY KEY,
    merchant_id  TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash BLOB NOT NULL,
    status       INTEGER NOT NULL,
    body         BLOB NOT NULL,
    created      INTEGER NOT NULL,
    UNIQUE (merchant_id, key)
) STRICT;
INSERT INTO idempotency_keys_new (merchant_id, key, request_hash, status, body, created)
    SELECT merchant_id, key, request_hash, status, body, created FROM idempotency_keys ORDER BY created;
DROP TABLE idempotency_keys;
ALTER TABLE idempotency_keys_new RENAME TO idempotency_keys;
CREATE INDEX idempotency_keys_created ON idempotency_keys (created);
