package dev.outbox.faults;

import static org.assertj.core.api.Assertions.assertThat;

import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.OutboxSchema;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.r2dbc.OutboxTransactions;
import dev.outbox.r2dbc.OutboxWriter;
import dev.outbox.relay.OutboxRelay;
import dev.outbox.relay.RelayHandle;
import dev.outbox.relay.RelayMode;
import dev.outbox.relay.RelayOptions;
import dev.outbox.testing.Poll;
import dev.outbox.testing.TestPostgres;
import io.r2dbc.pool.ConnectionPool;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import org.junit.jupiter.api.Test;

/**
 * A WAL relay with nothing in flight does not hold up a fast shutdown of PostgreSQL (the
 * walsender exits only once its client confirmed what it was sent). The README said it did;
 * this test, written to show the fix, passed on PostgreSQL 17.5 before the fix too (the relay
 * then confirmed only the ends of outbox transactions), so it guards the README's statement
 * rather than that change. With rows in flight the relay cannot confirm past them, and the
 * fault suite's restart still falls back to an immediate shutdown (see RestartablePostgres).
 */
class WalFastShutdownTest {
  private static final Duration QUICKLY = Duration.ofSeconds(30);

  @Test
  void anIdleWalRelayLetsAFastShutdownThrough() {
    FaultWorld world = FaultWorld.get();
    TestPostgres db = world.db();
    OutboxTable table = OutboxTable.of(TestPostgres.uniqueName("faststop"));
    String topic = TestPostgres.uniqueName("faststop");
    String slot = table.name() + "_relay";
    world.kafka.createTopic(topic, 1);
    ConnectionPool pool = db.newPool(4);
    OutboxSchema.createIfMissing(pool, table).block(QUICKLY);
    RelayHandle relay = OutboxRelay.create(pool, RelayOptions.builder().table(table)
        .mode(RelayMode.WAL).kafka(world.kafka.producerProperties()).build()).start();
    boolean fast;
    try {
      Poll.until("the relay follows the slot", QUICKLY, () -> db.queryLong(
          "SELECT count(*) FROM pg_replication_slots s JOIN pg_stat_activity a"
              + " ON a.pid = s.active_pid WHERE a.backend_type = 'walsender'"
              + " AND s.slot_name = '" + slot + "'") == 1);
      OutboxWriter writer = OutboxWriter.builder().table(table).build();
      OutboxTransactions.inTransaction(pool, c -> writer.write(Message.builder().stream(topic)
          .key("k").data("before the shutdown".getBytes(StandardCharsets.UTF_8)).build()))
          .block(QUICKLY);
      Poll.until("the row is published and deleted", QUICKLY,
          () -> db.queryLong("SELECT count(*) FROM " + table.qualifiedName()) == 0);
      fast = world.postgres.stopServer();
    } finally {
      world.postgres.startServer();
      relay.stop(Duration.ofSeconds(10)).block(QUICKLY);
      pool.dispose();
      Poll.until("the slot is released", QUICKLY, () -> db.queryLong(
          "SELECT count(*) FROM pg_replication_slots WHERE active AND slot_name = '" + slot
              + "'") == 0);
      db.execute("SELECT pg_drop_replication_slot('" + slot + "')",
          "DROP PUBLICATION IF EXISTS " + slot, "DROP TABLE " + table.qualifiedName(),
          "DROP TABLE " + table.deadLetterQualifiedName());
    }
    assertThat(fast).as("PostgreSQL stopped by its fast shutdown, not immediately").isTrue();
    assertThat(world.kafka.recordCount(topic)).isEqualTo(1);
  }
}
