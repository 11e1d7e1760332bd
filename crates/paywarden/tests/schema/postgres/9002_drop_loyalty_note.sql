-- paywarden: contract
-- The schema rollout tests' third release: a drop, which the releases before it may not be
-- able to live with, so they refuse to start on a database that has it.
ALTER TABLE loyalty_accounts DROP COLUMN note;
