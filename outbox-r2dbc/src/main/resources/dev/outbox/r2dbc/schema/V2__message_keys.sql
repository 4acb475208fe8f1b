-- Reactive Outbox schema, version 2: the partition keys of each batch ("stream<US>key", US =
-- U+001F), so that an ORDERED relay can hold a key back while an earlier batch with that key
-- is still unpublished. Rows written before this version (or by the Go package) have no keys
-- and are not held back.
ALTER TABLE streams_egress ADD COLUMN IF NOT EXISTS message_keys TEXT[] NOT NULL DEFAULT '{}';
CREATE INDEX IF NOT EXISTS streams_egress_message_keys_idx ON streams_egress USING GIN (message_keys);
ALTER TABLE streams_egress_dead_letter ADD COLUMN IF NOT EXISTS message_keys TEXT[] NOT NULL DEFAULT '{}';
