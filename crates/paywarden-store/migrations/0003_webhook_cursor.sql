-- paywarden: expand
-- Deliveries are queued lazily. An event is still written in the same transaction as the
-- change it describes (the outbox), but its delivery rows are no longer fanned out there:
-- each endpoint keeps a cursor over `events.seq`, and the delivery loop claims the events
-- after it (inserting their rows and moving the cursor in one write) as it has room to send
-- them. A payment therefore writes one row for its event whatever the endpoints do, and a
-- receiver that never answers holds back only its own cursor: the backlog is the events
-- table itself, on disk.
--
-- Matching events with seq > cursor_seq are pending deliveries without a row. An endpoint
-- starts at the newest event when it is created (it receives what happens after), and again
-- when it is enabled after being disabled (as before: a disabled endpoint gets nothing).
ALTER TABLE webhook_endpoints ADD COLUMN cursor_seq INTEGER NOT NULL DEFAULT 0;
-- Existing endpoints had every event up to now fanned out already.
UPDATE webhook_endpoints SET cursor_seq = (SELECT coalesce(max(seq), 0) FROM events);
