-- Reactive Outbox schema, version 0.1: adopts an outbox table that already exists without our
-- columns, keeping its rows, so that V1 and V2 then apply. Does nothing when the table is
-- missing (a new installation) or already has them. Two cases:
--  * a table created by the Go `streams` package (batch_id, in_flight, message_count,
--    write_retries, last_write_error, raw_data): gains every V1 column; insert_seq follows
--    batch_id (a KSUID, so time order), insert_time is the KSUID's time, writer_xid the
--    adopting transaction's;
--  * a table of our schema version 1 (no message_keys yet).
-- In both, message_keys (and message_count, when it does not match) are computed from each
-- row's raw_data (protobuf streams.TransportMessageBatch), so ORDERED relays hold keys back for
-- adopted rows too; a row whose raw_data cannot be parsed keeps empty keys (the relay will
-- dead-letter it as undecodable). With Flyway on a Go table: baselineVersion 0, then migrate.
DO $$
DECLARE
  tbl REGCLASS := to_regclass('streams_egress');
  r RECORD;
  raw BYTEA;
  pos INT;
  msg_end INT;
  val BIGINT;
  shift INT;
  b INT;
  tag BIGINT;
  stream_name TEXT;
  stream_key TEXT;
  messages INT;
  keys TEXT[];
BEGIN
  IF tbl IS NULL OR EXISTS (SELECT 1 FROM pg_attribute
      WHERE attrelid = tbl AND attname = 'message_keys' AND NOT attisdropped) THEN
    RETURN;
  END IF;

  IF NOT EXISTS (SELECT 1 FROM pg_attribute
      WHERE attrelid = tbl AND attname = 'insert_seq' AND NOT attisdropped) THEN
    -- The Go DDL's columns are nullable and default message_count to 0.
    UPDATE streams_egress SET in_flight = FALSE, write_retries = COALESCE(write_retries, 0),
        message_count = COALESCE(message_count, 0);
    ALTER TABLE streams_egress
        ALTER COLUMN in_flight SET DEFAULT FALSE, ALTER COLUMN in_flight SET NOT NULL,
        ALTER COLUMN write_retries SET DEFAULT 0, ALTER COLUMN write_retries SET NOT NULL,
        ALTER COLUMN message_count DROP DEFAULT, ALTER COLUMN message_count SET NOT NULL,
        ADD COLUMN IF NOT EXISTS insert_time TIMESTAMPTZ,
        ADD COLUMN insert_seq BIGINT,
        ADD COLUMN IF NOT EXISTS writer_xid XID8 NOT NULL DEFAULT pg_current_xact_id(),
        ADD COLUMN IF NOT EXISTS next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        ADD COLUMN IF NOT EXISTS lease_owner VARCHAR(255),
        ADD COLUMN IF NOT EXISTS lease_token UUID,
        ADD COLUMN IF NOT EXISTS lease_expires_at TIMESTAMPTZ;
    -- Insert order = KSUID order; COLLATE "C" compares base62 digits by code point.
    UPDATE streams_egress AS o SET insert_seq = n.seq
        FROM (SELECT batch_id, row_number() OVER (ORDER BY batch_id COLLATE "C") AS seq
              FROM streams_egress) AS n
        WHERE o.batch_id = n.batch_id;
    -- A KSUID's first 4 bytes are seconds since 1400000000 (2014-05-13T16:53:20Z).
    UPDATE streams_egress SET insert_time = CASE WHEN batch_id ~ '^[0-9A-Za-z]{27}$'
        THEN to_timestamp(1400000000 + div((SELECT sum((strpos(
            '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz',
            substr(batch_id, i, 1)) - 1)::NUMERIC * power(62::NUMERIC, 27 - i))
            FROM generate_series(1, 27) AS i), power(2::NUMERIC, 128))::DOUBLE PRECISION)
        ELSE now() END
        WHERE insert_time IS NULL;
    ALTER TABLE streams_egress
        ALTER COLUMN insert_time SET DEFAULT now(), ALTER COLUMN insert_time SET NOT NULL,
        ALTER COLUMN insert_seq SET NOT NULL;
    ALTER TABLE streams_egress ALTER COLUMN insert_seq ADD GENERATED ALWAYS AS IDENTITY;
    PERFORM setval(pg_get_serial_sequence('streams_egress', 'insert_seq'),
        COALESCE((SELECT max(insert_seq) FROM streams_egress), 0) + 1, false);
  END IF;

  ALTER TABLE streams_egress ADD COLUMN message_keys TEXT[] NOT NULL DEFAULT '{}';

  -- Per row: TransportMessageBatch = repeated field 1 (TransportMessage, length-delimited);
  -- in each message, field 2 is streamName and field 3 streamKey, as MessageKeys stores them.
  FOR r IN SELECT batch_id, raw_data, message_count FROM streams_egress LOOP
    BEGIN
      raw := r.raw_data;
      pos := 0;
      messages := 0;
      keys := '{}';
      WHILE pos < length(raw) LOOP
        IF get_byte(raw, pos) <> 10 THEN
          RAISE EXCEPTION 'not a TransportMessageBatch';
        END IF;
        pos := pos + 1;
        val := 0; shift := 0;
        LOOP
          b := get_byte(raw, pos); pos := pos + 1;
          val := val | ((b & 127)::BIGINT << shift); shift := shift + 7;
          EXIT WHEN b < 128;
        END LOOP;
        msg_end := pos + val;
        IF msg_end > length(raw) THEN
          RAISE EXCEPTION 'cut message';
        END IF;
        stream_name := ''; stream_key := '';
        WHILE pos < msg_end LOOP
          tag := 0; shift := 0;
          LOOP
            b := get_byte(raw, pos); pos := pos + 1;
            tag := tag | ((b & 127)::BIGINT << shift); shift := shift + 7;
            EXIT WHEN b < 128;
          END LOOP;
          val := 0; shift := 0;
          LOOP
            b := get_byte(raw, pos); pos := pos + 1;
            val := val | ((b & 127)::BIGINT << shift); shift := shift + 7;
            EXIT WHEN b < 128;
          END LOOP;
          IF tag & 7 = 2 THEN
            IF tag >> 3 = 2 THEN
              stream_name := convert_from(substring(raw FROM pos + 1 FOR val::INT), 'UTF8');
            ELSIF tag >> 3 = 3 THEN
              stream_key := convert_from(substring(raw FROM pos + 1 FOR val::INT), 'UTF8');
            END IF;
            pos := pos + val::INT;
          ELSIF tag & 7 <> 0 THEN
            RAISE EXCEPTION 'unexpected wire type';
          END IF;
        END LOOP;
        messages := messages + 1;
        IF stream_key <> '' AND NOT (stream_name || chr(31) || stream_key = ANY (keys)) THEN
          keys := keys || (stream_name || chr(31) || stream_key);
        END IF;
      END LOOP;
      IF messages > 0 THEN
        UPDATE streams_egress SET message_keys = keys, message_count = messages
            WHERE batch_id = r.batch_id;
      END IF;
    EXCEPTION WHEN OTHERS THEN
      NULL;  -- unparseable: keeps empty keys; the relay dead-letters it when it fails to decode
    END;
  END LOOP;
END
$$;
