package dev.outbox.faults;

import static org.assertj.core.api.Assertions.assertThat;

import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.OutboxSchema;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.r2dbc.OutboxTransactions;
import dev.outbox.r2dbc.OutboxWriter;
import dev.outbox.testing.Poll;
import dev.outbox.testing.TestPostgres;
import io.r2dbc.pool.ConnectionPool;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.apache.kafka.clients.admin.Admin;
import org.junit.jupiter.api.Test;

/**
 * The byte-budget case: 60 outbox rows, each holding 100 messages of 100 KB (10 MB a
 * row, 600 MB in all), drained by the standalone relay in its own {@code -Xmx256m} JVM with
 * default settings. A relay that bounds only the number of records in flight (1,000 by
 * default: ten such rows, 100 MB of payload, copied a few times while decoding and sending)
 * runs out of memory; one with a byte budget drains everything.
 */
class ByteBudgetHeapTest {
  private static final int ROWS = 60;
  private static final int MESSAGES_PER_ROW = 100;
  private static final int MESSAGE_BYTES = 100 * 1024;
  private static final Duration DRAIN_DEADLINE = Duration.ofSeconds(100);

  @Test
  void sixtyTenMegabyteRowsDrainInA256MegabyteRelay() throws Exception {
    FaultWorld world = FaultWorld.get();
    OutboxTable table = OutboxTable.of(TestPostgres.uniqueName("heap"));
    String topic = TestPostgres.uniqueName("heap");
    OutboxSchema.createIfMissing(world.db().connectionFactory(), table)
        .block(Duration.ofSeconds(60));
    world.kafka.createTopic(topic, 3);
    writeBacklog(world, table, topic);

    Map<String, String> env = Map.of(
        "OUTBOX_DATABASE_URL", world.relayDatabaseUrl(),
        "OUTBOX_KAFKA_BOOTSTRAP_SERVERS", world.kafkaBootstrap(),
        "OUTBOX_TABLE", table.qualifiedName(),
        "OUTBOX_HTTP_PORT", "0");
    RelayProcess relay = RelayProcess.start("heap", env,
        world.directory.resolve("byte-budget-heap-relay.log"));
    long started = System.nanoTime();
    long expected = (long) ROWS * MESSAGES_PER_ROW;
    try {
      Poll.until(expected + " records published by a relay in -Xmx256m", DRAIN_DEADLINE, () -> {
        String output = relay.output();
        if (output.contains("OutOfMemoryError")) {
          throw new AssertionError("the relay ran out of memory with "
              + world.kafka.recordCount(topic) + " of " + expected + " records published;"
              + " output:\n" + excerpt(output, "OutOfMemoryError"));
        }
        if (!relay.isAlive()) {
          throw new AssertionError("the relay exited; output:\n" + tail(output));
        }
        return world.kafka.recordCount(topic) >= expected;
      });
      double seconds = (System.nanoTime() - started) / 1e9;
      Poll.until("the outbox table is empty", Duration.ofSeconds(30),
          () -> world.db().queryLong("SELECT count(*) FROM " + table.qualifiedName()) == 0);
      relay.stop();
      assertThat(relay.reportedBlocking()).as(relay.output()).isFalse();
      System.out.printf("FAULT REPORT byte budget: %d records of %d KB from %d rows drained by a"
              + " -Xmx256m relay in %.1f s (%d records in the topic)%n", expected,
          MESSAGE_BYTES / 1024, ROWS, seconds, world.kafka.recordCount(topic));
    } finally {
      if (relay.isAlive()) {
        relay.kill();
      }
      try (Admin admin = world.kafka.newAdmin()) {
        admin.deleteTopics(Set.of(topic)).all().get();
      }
      world.db().execute("DROP TABLE " + table.qualifiedName(),
          "DROP TABLE " + table.deadLetterQualifiedName());
    }
  }

  /** 60 transactions, each one batch of 100 messages of 100 KB. */
  private static void writeBacklog(FaultWorld world, OutboxTable table, String topic) {
    OutboxWriter writer = OutboxWriter.builder().table(table).build();
    ConnectionPool pool = world.db().newPool(1);
    try {
      for (int row = 0; row < ROWS; row++) {
        List<Message> batch = new ArrayList<>(MESSAGES_PER_ROW);
        for (int m = 0; m < MESSAGES_PER_ROW; m++) {
          byte[] data = new byte[MESSAGE_BYTES];
          Arrays.fill(data, (byte) (row * MESSAGES_PER_ROW + m));
          batch.add(Message.builder().stream(topic).key("k" + m).data(data).build());
        }
        OutboxTransactions.inTransaction(pool, c -> writer.write(batch))
            .block(Duration.ofSeconds(60));
      }
    } finally {
      pool.dispose();
    }
  }

  private static String excerpt(String output, String around) {
    int at = output.indexOf(around);
    return output.substring(Math.max(0, at - 2_000), Math.min(output.length(), at + 3_000));
  }

  private static String tail(String output) {
    return output.substring(Math.max(0, output.length() - 6_000));
  }
}
