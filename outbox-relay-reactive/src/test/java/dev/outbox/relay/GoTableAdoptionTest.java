package dev.outbox.relay;

import static org.assertj.core.api.Assertions.assertThat;

import dev.outbox.r2dbc.Codec;
import dev.outbox.r2dbc.Ksuid;
import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.OutboxSchema;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.testing.Poll;
import dev.outbox.testing.TestKafka;
import dev.outbox.testing.TestPostgres;
import io.r2dbc.pool.ConnectionPool;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.HexFormat;
import java.util.List;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.junit.jupiter.api.Test;

/** Rows written by the Go package into its own table are published after the upgrade. */
class GoTableAdoptionTest {

  @Test
  void rowsOfAGoStreamsTableArePublishedAfterTheUpgrade() {
    TestPostgres postgres = TestPostgres.get();
    TestKafka kafka = TestKafka.get();
    OutboxTable table = OutboxTable.of(TestPostgres.uniqueName("go_streams"));
    String topic = TestPostgres.uniqueName("go_topic");
    kafka.createTopic(topic, 1);
    postgres.execute("CREATE TABLE " + table.name() + " (batch_id CHAR(27) PRIMARY KEY,"
        + " in_flight BOOLEAN DEFAULT FALSE, message_count INTEGER DEFAULT 0,"
        + " write_retries INTEGER DEFAULT 0, last_write_error VARCHAR(255),"
        + " raw_data BYTEA NOT NULL)");
    Instant written = Instant.parse("2025-06-01T08:00:00Z");
    for (int batch = 0; batch < 3; batch++) {
      byte[] raw = Codec.protobuf().encode(List.of(
          Message.builder().stream(topic).key("k").data("go " + batch + ".0").time(written).build(),
          Message.builder().stream(topic).key("k").data("go " + batch + ".1").time(written).build()));
      postgres.execute("INSERT INTO " + table.name() + " (batch_id, message_count, raw_data)"
          + " VALUES ('" + Ksuid.generate(written.plusSeconds(batch)) + "', 2, '\\x"
          + HexFormat.of().formatHex(raw) + "')");
    }

    OutboxSchema.createIfMissing(postgres.connectionFactory(), table).block(Duration.ofSeconds(60));

    ConnectionPool pool = postgres.newPool(6);
    RelayHandle relay = OutboxRelay.create(pool, RelayOptions.builder().table(table)
        .mode(RelayMode.ORDERED).kafka(kafka.producerProperties())
        .pollInterval(Duration.ofMillis(100)).build()).start();
    try {
      Poll.until("the Go rows are published", Duration.ofSeconds(60),
          () -> kafka.recordCount(topic) >= 6
              && postgres.queryLong("SELECT count(*) FROM " + table.name()) == 0);
    } finally {
      relay.stop(Duration.ofSeconds(10)).block(Duration.ofSeconds(20));
      pool.dispose();
    }
    List<ConsumerRecord<String, byte[]>> records = kafka.readToEnd(topic);
    assertThat(records).extracting(r -> new String(r.value(), StandardCharsets.UTF_8))
        .containsExactly("go 0.0", "go 0.1", "go 1.0", "go 1.1", "go 2.0", "go 2.1");
    assertThat(postgres.queryLong("SELECT count(*) FROM " + table.name() + "_dead_letter"))
        .isZero();
  }
}
