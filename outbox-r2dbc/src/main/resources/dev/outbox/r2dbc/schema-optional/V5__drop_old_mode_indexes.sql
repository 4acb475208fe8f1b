-- Version 5 (opt-in): drops the indexes only the deprecated PARALLEL and ORDERED relay modes
-- use. Every insert into the outbox pays for every index on it, in the business transaction;
-- the PARTITIONED relay reads through (outbox_partition, insert_seq) and deletes by batch_id, and
-- checks next_attempt_at and message_keys only on rows it already reads. Apply it once no relay
-- runs PARALLEL or ORDERED on this table: their claims would scan the table without these.
DROP INDEX IF EXISTS streams_egress_next_attempt_idx;
DROP INDEX IF EXISTS streams_egress_message_keys_idx;
