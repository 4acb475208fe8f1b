-- Reactive Outbox schema, version 3: partitions, for the PARTITIONED relay mode.
--
-- Every row belongs to one of 32 partitions, from its first message key ("stream<US>key") or,
-- for a row without keys (including rows the Go package writes), from its batch id. All rows
-- of one key land in one partition. The number of partitions is fixed here: to choose another,
-- change both 32s below before the table is first created.
ALTER TABLE streams_egress ADD COLUMN IF NOT EXISTS outbox_partition SMALLINT
    GENERATED ALWAYS AS (mod(hashtext(COALESCE(message_keys[1], batch_id::text)) & 2147483647, 32)) STORED;
CREATE INDEX IF NOT EXISTS streams_egress_part_seq_idx ON streams_egress (outbox_partition, insert_seq);

-- Who owns which partition. epoch grows with every change of owner: a settlement presents the
-- epoch it read under, so a relay that lost a partition (frozen, cut off) changes nothing.
CREATE TABLE IF NOT EXISTS streams_egress_partitions (
    outbox_partition  SMALLINT     NOT NULL,
    owner             TEXT,
    epoch             BIGINT       NOT NULL DEFAULT 0,
    expires_at        TIMESTAMPTZ,
    CONSTRAINT streams_egress_partitions_pkey PRIMARY KEY (outbox_partition)
);
INSERT INTO streams_egress_partitions (outbox_partition)
    SELECT p FROM generate_series(0, 31) AS p ON CONFLICT DO NOTHING;

-- Live relays: each one refreshes its row; the partitions are shared among the live ones.
CREATE TABLE IF NOT EXISTS streams_egress_relays (
    relay_id          TEXT         NOT NULL,
    heartbeat_at      TIMESTAMPTZ  NOT NULL,
    CONSTRAINT streams_egress_relays_pkey PRIMARY KEY (relay_id)
);
