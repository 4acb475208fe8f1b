-- Reactive Outbox schema, version 1. Requires PostgreSQL 13 or later (pg_current_xact_id).
-- Usable as a Flyway/Liquibase migration as is (table streams_egress); for another table
-- name, replace "streams_egress" throughout, or call OutboxSchema.createIfMissing(...), which
-- applies this file with the configured name.

-- The columns of the original Go `streams` table keep their names and meanings.
CREATE TABLE IF NOT EXISTS streams_egress (
    batch_id          CHAR(27)     NOT NULL,  -- KSUID of the batch
    in_flight         BOOLEAN      NOT NULL DEFAULT FALSE,  -- claimed by a relay right now
    message_count     INTEGER      NOT NULL,  -- messages in raw_data
    write_retries     INTEGER      NOT NULL DEFAULT 0,  -- failed publish attempts so far
    last_write_error  VARCHAR(255),  -- the last failure, truncated
    raw_data          BYTEA        NOT NULL,  -- the encoded batch
    insert_time       TIMESTAMPTZ  NOT NULL DEFAULT now(),
    -- Added for a correct multi-instance relay:
    insert_seq        BIGINT       GENERATED ALWAYS AS IDENTITY,  -- insert order
    writer_xid        XID8         NOT NULL DEFAULT pg_current_xact_id(),  -- for the commit watermark
    next_attempt_at   TIMESTAMPTZ  NOT NULL DEFAULT now(),  -- backoff: not claimable before
    lease_owner       VARCHAR(255),  -- relay instance holding the claim
    lease_token       UUID,  -- fencing token of the claim; settlement must present it
    lease_expires_at  TIMESTAMPTZ,  -- after this, another relay may claim the batch
    CONSTRAINT streams_egress_pkey PRIMARY KEY (batch_id),
    CONSTRAINT streams_egress_message_count_check CHECK (message_count > 0)
);

CREATE UNIQUE INDEX IF NOT EXISTS streams_egress_insert_seq_idx ON streams_egress (insert_seq);
CREATE INDEX IF NOT EXISTS streams_egress_next_attempt_idx ON streams_egress (next_attempt_at);

-- What can never be published, with the reason; OutboxStore.redrive moves a row back.
CREATE TABLE IF NOT EXISTS streams_egress_dead_letter (
    batch_id          CHAR(27)     NOT NULL,
    message_count     INTEGER      NOT NULL,
    write_retries     INTEGER      NOT NULL,
    reason            TEXT         NOT NULL,
    raw_data          BYTEA        NOT NULL,
    insert_time       TIMESTAMPTZ  NOT NULL,
    dead_lettered_at  TIMESTAMPTZ  NOT NULL DEFAULT now(),
    CONSTRAINT streams_egress_dead_letter_pkey PRIMARY KEY (batch_id)
);
