package dev.outbox.r2dbc;

import static org.assertj.core.api.Assertions.assertThat;

import dev.outbox.testing.PostgresExtension;
import dev.outbox.testing.TestPostgres;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.HexFormat;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

/**
 * {@link OutboxSchema#createIfMissing} on tables that exist without the current columns: the Go
 * {@code streams} package's table and our schema version 1. Rows survive and become claimable
 * with insert order, time, count and keys filled in.
 */
@ExtendWith(PostgresExtension.class)
class OutboxSchemaUpgradeTest {
  /** The Go package's DDL (alexandria-oss/streams, SQL driver README). */
  static final String GO_DDL = "CREATE TABLE %s (batch_id CHAR(27) PRIMARY KEY,"
      + " in_flight BOOLEAN DEFAULT FALSE, message_count INTEGER DEFAULT 0,"
      + " write_retries INTEGER DEFAULT 0, last_write_error VARCHAR(255),"
      + " raw_data BYTEA NOT NULL)";

  private final TestPostgres postgres;

  OutboxSchemaUpgradeTest(TestPostgres postgres) {
    this.postgres = postgres;
  }

  private static String hex(byte[] bytes) {
    return "'\\x" + HexFormat.of().formatHex(bytes) + "'";
  }

  private static Message message(String stream, String key) {
    return Message.builder().stream(stream).key(key).data("payload of " + key).build();
  }

  @Test
  void aGoStreamsTableIsAdoptedWithItsRows() {
    OutboxTable table = OutboxTable.of(TestPostgres.uniqueName("go_streams"));
    postgres.execute(String.format(GO_DDL, table.qualifiedName()));
    Instant older = Instant.parse("2025-03-01T10:00:00Z");
    String first = Ksuid.generate(older).toString();
    String second = Ksuid.generate(older.plusSeconds(60)).toString();
    String third = Ksuid.generate(older.plusSeconds(120)).toString();
    byte[] firstRaw = Codec.protobuf().encode(List.of(message("orders", "a"),
        message("orders", "b"), message("orders", "a")));
    byte[] secondRaw = Codec.protobuf().encode(List.of(
        Message.builder().stream("audit").data(new byte[] {1}).build()));
    byte[] thirdRaw = Codec.protobuf().encode(List.of(message("orders", "b")));
    // Inserted out of time order and as the Go writer does: only its columns, the third row
    // with the DDL's default message_count 0.
    postgres.execute(
        "INSERT INTO " + table.qualifiedName() + " (batch_id, message_count, raw_data) VALUES ('"
            + third + "', DEFAULT, " + hex(thirdRaw) + ")",
        "INSERT INTO " + table.qualifiedName() + " (batch_id, message_count, raw_data) VALUES ('"
            + first + "', 3, " + hex(firstRaw) + ")",
        "INSERT INTO " + table.qualifiedName() + " (batch_id, message_count, raw_data) VALUES ('"
            + second + "', 1, " + hex(secondRaw) + ")",
        "INSERT INTO " + table.qualifiedName() + " (batch_id, message_count, raw_data) VALUES ('"
            + Ksuid.generate(older.plusSeconds(180)) + "', 1, '\\x0badbeef')");

    OutboxSchema.createIfMissing(postgres.connectionFactory(), table).block(Duration.ofSeconds(60));
    // Running it again changes nothing.
    OutboxSchema.createIfMissing(postgres.connectionFactory(), table).block(Duration.ofSeconds(60));

    String t = table.qualifiedName();
    assertThat(postgres.queryColumn("SELECT batch_id FROM " + t + " ORDER BY insert_seq"))
        .startsWith(first, second, third).hasSize(4);
    assertThat(postgres.queryColumn("SELECT message_count FROM " + t + " ORDER BY insert_seq"))
        .containsExactly(3, 1, 1, 1);
    assertThat(postgres.queryColumn("SELECT array_to_string(message_keys, ',') FROM " + t
        + " ORDER BY insert_seq")).containsExactly("orders\u001fa,orders\u001fb", "",
        "orders\u001fb", "");
    assertThat(postgres.queryColumn("SELECT insert_time FROM " + t + " WHERE batch_id = '"
        + second + "'")).singleElement()
        .satisfies(v -> assertThat(((java.time.OffsetDateTime) v).toInstant())
            .isEqualTo(older.plusSeconds(60)));
    assertThat(postgres.queryLong("SELECT count(*) FROM " + t + " WHERE in_flight OR"
        + " next_attempt_at > now() OR lease_owner IS NOT NULL")).isZero();

    // New writes go after the adopted rows, with a fresh writer_xid; the dead-letter table exists.
    postgres.execute("INSERT INTO " + t + " (batch_id, message_count, raw_data) VALUES ('"
        + Ksuid.generate() + "', 1, " + hex(thirdRaw) + ")");
    assertThat(postgres.queryLong("SELECT max(insert_seq) FROM " + t)).isEqualTo(5);
    assertThat(postgres.queryLong("SELECT count(*) FROM " + t + "_dead_letter")).isZero();
    assertThat(postgres.queryLong("SELECT count(*) FROM pg_indexes WHERE indexname = '"
        + table.name() + "_message_keys_idx'")).isEqualTo(1);
  }

  @Test
  void aVersionOneTableGetsItsKeys() throws IOException {
    OutboxTable table = OutboxTable.of(TestPostgres.uniqueName("v1_outbox"));
    String v1;
    try (InputStream in = getClass().getClassLoader()
        .getResourceAsStream(OutboxSchema.RESOURCE_DIR + "V1__create_outbox.sql")) {
      v1 = new String(in.readAllBytes(), StandardCharsets.UTF_8)
          .replaceAll("--[^\n]*", "").replace(OutboxTable.DEFAULT_NAME, table.name());
    }
    postgres.execute(java.util.Arrays.stream(v1.split(";")).filter(s -> !s.isBlank())
        .toArray(String[]::new));
    String id = Ksuid.generate().toString();
    postgres.execute("INSERT INTO " + table.name() + " (batch_id, message_count, raw_data)"
        + " VALUES ('" + id + "', 2, " + hex(Codec.protobuf().encode(List.of(
            message("orders", "x"), message("payments", "x")))) + ")");
    long seq = postgres.queryLong("SELECT insert_seq FROM " + table.name());

    OutboxSchema.createIfMissing(postgres.connectionFactory(), table).block(Duration.ofSeconds(60));

    assertThat(postgres.queryColumn("SELECT array_to_string(message_keys, ',') FROM "
        + table.name())).containsExactly("orders\u001fx,payments\u001fx");
    assertThat(postgres.queryLong("SELECT insert_seq FROM " + table.name())).isEqualTo(seq);
    assertThat(postgres.queryColumn("SELECT insert_time FROM " + table.name()).get(0))
        .satisfies(v -> assertThat(((java.time.OffsetDateTime) v).toInstant())
            .isCloseTo(Instant.now(), org.assertj.core.api.Assertions.within(1, ChronoUnit.MINUTES)));
  }

  @Test
  void batchesOfAFewKilobytesStayInsideTheRow() {
    OutboxTable table = OutboxTable.of(TestPostgres.uniqueName("inline_outbox"));
    OutboxSchema.createIfMissing(postgres.connectionFactory(), table).block(Duration.ofSeconds(60));
    // 6 KB of incompressible bytes: over PostgreSQL's default 2 KB threshold, under the target.
    postgres.execute("INSERT INTO " + table.name() + " (batch_id, message_count, raw_data)"
        + " SELECT '" + Ksuid.generate() + "', 1, string_agg(decode(md5(i::text), 'hex'), ''::bytea)"
        + " FROM generate_series(1, 384) AS i");

    assertThat(postgres.queryColumn("SELECT array_to_string(reloptions, ',') FROM pg_class WHERE oid = '"
        + table.name() + "'::regclass")).containsExactly("toast_tuple_target=8160");
    assertThat(postgres.queryLong("SELECT octet_length(raw_data) FROM " + table.name())).isEqualTo(6144);
    assertThat(postgres.queryLong("SELECT pg_relation_size(reltoastrelid) FROM pg_class WHERE oid = '"
        + table.name() + "'::regclass")).isZero();
  }

  @Test
  void theOldModesIndexesCanBeDroppedAndWritingGoesOn() {
    OutboxTable table = OutboxTable.of(TestPostgres.uniqueName("app") + "." + TestPostgres.uniqueName("lean"));
    String schema = table.schema().orElseThrow();
    postgres.execute("CREATE SCHEMA " + schema);
    OutboxSchema.createIfMissing(postgres.connectionFactory(), table).block(Duration.ofSeconds(60));
    String indexes = "SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE schemaname = '"
        + schema + "' AND tablename = '" + table.name() + "'";
    assertThat(postgres.queryColumn(indexes).get(0).toString())
        .contains("_next_attempt_idx").contains("_message_keys_idx");

    OutboxSchema.dropOldModeIndexes(postgres.connectionFactory(), table).block(Duration.ofSeconds(60));
    OutboxSchema.dropOldModeIndexes(postgres.connectionFactory(), table).block(Duration.ofSeconds(60));

    assertThat(postgres.queryColumn(indexes).get(0).toString().split(","))
        .containsExactlyInAnyOrder(table.name() + "_insert_seq_idx", table.name() + "_part_seq_idx",
            table.name() + "_pkey");
    OutboxWriter writer = OutboxWriter.builder().table(table).build();
    dev.outbox.r2dbc.OutboxTransactions.inTransaction(postgres.connectionFactory(),
            c -> writer.write(message("orders", "k")))
        .block(Duration.ofSeconds(30));
    assertThat(postgres.queryLong("SELECT count(*) FROM " + table.qualifiedName())).isEqualTo(1);
  }
}
