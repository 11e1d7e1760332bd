-- paywarden: expand
-- The schema rollout tests' second release: a new table and a new nullable column on an
-- existing table. The release before it never reads either, and its inserts leave the column
-- NULL, so it keeps running on the migrated schema.
CREATE TABLE loyalty_accounts (
    id     TEXT PRIMARY KEY,
    points BIGINT NOT NULL DEFAULT 0,
    note   TEXT
);
ALTER TABLE payment_intents ADD COLUMN loyalty_account TEXT;
