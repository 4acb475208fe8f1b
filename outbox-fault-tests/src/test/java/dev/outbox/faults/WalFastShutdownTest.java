package dev.outbox.faults;

import static org.assertj.core.api.Assertions.assertThat;

import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.OutboxSchema;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.r2dbc.OutboxTransactions;
import dev.outbox.r2dbc.OutboxWriter;
import dev.outbox.relay.KafkaProducerSink;
import dev.outbox.relay.OutboundRecord;
import dev.outbox.relay.OutboxRelay;
import dev.outbox.relay.RecordSink;
import dev.outbox.relay.SendResult;
import dev.outbox.relay.RelayHandle;
import dev.outbox.relay.RelayMode;
import dev.outbox.relay.RelayOptions;
import dev.outbox.testing.Poll;
import dev.outbox.testing.TestPostgres;
import io.r2dbc.pool.ConnectionPool;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;
import org.reactivestreams.Publisher;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import reactor.core.publisher.Sinks;

/**
 * A WAL relay does not hold up a fast shutdown of PostgreSQL: the walsender exits only once its
 * client confirmed what it was sent, or once the client ends the stream.
 *
 * <p>Idle: the README said it did; that test, written to show a fix, passed on PostgreSQL 17.5
 * before the fix too (the relay then confirmed only the ends of outbox transactions), so it
 * guards the README's statement rather than that change. With rows in flight: the relay cannot
 * confirm past them (their DELETEs fail while the server shuts down), so it ends its stream
 * once it finds the server unavailable.
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
      awaitFollowing(db, slot);
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
      dropOnceReleased(db, table, slot);
    }
    assertThat(fast).as("PostgreSQL stopped by its fast shutdown, not immediately").isTrue();
    assertThat(world.kafka.recordCount(topic)).isEqualTo(1);
  }

  /**
   * Rows reach the relay and wait in its sink; the fast shutdown begins; then Kafka answers, the
   * DELETEs fail, and the relay, finding the server unavailable, ends its replication stream so
   * the walsender can exit. Before that change the relay tried again every second while its
   * walsender waited for it, and the shutdown needed SIGQUIT (stopServer returned false).
   */
  @Test
  void aWalRelayWithRowsInFlightLetsAFastShutdownThrough() throws Exception {
    FaultWorld world = FaultWorld.get();
    TestPostgres db = world.db();
    OutboxTable table = OutboxTable.of(TestPostgres.uniqueName("faststopbusy"));
    String topic = TestPostgres.uniqueName("faststopbusy");
    String slot = table.name() + "_relay";
    int rows = 20;
    world.kafka.createTopic(topic, 1);
    ConnectionPool pool = db.newPool(4);
    OutboxSchema.createIfMissing(pool, table).block(QUICKLY);
    Sinks.Empty<Void> gate = Sinks.empty();
    AtomicInteger held = new AtomicInteger();
    RecordSink kafka = KafkaProducerSink.create(world.kafka.producerProperties(), 1000);
    RecordSink gated = new RecordSink() { // holds every record until the gate opens
      @Override
      public <T> Flux<SendResult<T>> send(Publisher<OutboundRecord<T>> records) {
        return kafka.send(Flux.from(records).concatMap(r -> "free".equals(r.key()) ? Mono.just(r)
            : Mono.fromRunnable(held::incrementAndGet).then(gate.asMono()).thenReturn(r)));
      }

      @Override
      public Mono<Void> close() {
        return kafka.close();
      }
    };
    RelayHandle relay = OutboxRelay.create(pool, RelayOptions.builder().table(table)
        .mode(RelayMode.WAL).sink(gated).build()).start();
    boolean fast;
    try {
      awaitFollowing(db, slot);
      OutboxWriter writer = OutboxWriter.builder().table(table).build();
      // First a row that goes through: a walsender whose client has confirmed nothing yet
      // takes what it received for confirmed, and would not wait.
      OutboxTransactions.inTransaction(pool, c -> writer.write(Message.builder().stream(topic)
          .key("free").data("before".getBytes(StandardCharsets.UTF_8)).build())).block(QUICKLY);
      long written = db.queryLong("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn");
      Poll.until("the relay confirms the first row", QUICKLY, () -> db.queryLong(
          "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '" + slot
              + "' AND confirmed_flush_lsn - '0/0'::pg_lsn >= " + written) == 1);
      for (int i = 0; i < rows; i++) {
        Message message = Message.builder().stream(topic).key("k" + i)
            .data(("row " + i).getBytes(StandardCharsets.UTF_8)).build();
        OutboxTransactions.inTransaction(pool, c -> writer.write(message)).block(QUICKLY);
      }
      Poll.until("the rows wait in the relay's sink", QUICKLY, () -> held.get() >= 1);
      assertThat(world.kafka.recordCount(topic)).as("only the first row is in Kafka").isEqualTo(1);
      CompletableFuture<Boolean> stopping = CompletableFuture.supplyAsync(world.postgres::stopServer);
      Poll.until("PostgreSQL refuses new sessions", QUICKLY, () -> !acceptsSessions(db));
      gate.tryEmitEmpty();
      fast = stopping.get(2, TimeUnit.MINUTES);
      world.postgres.startServer();
      Poll.until("every row is published and deleted after the restart", Duration.ofMinutes(2),
          () -> db.queryLong("SELECT count(*) FROM " + table.qualifiedName()) == 0);
    } finally {
      gate.tryEmitEmpty();
      if (!acceptsSessions(db)) {
        world.postgres.startServer();
      }
      relay.stop(Duration.ofSeconds(10)).block(QUICKLY);
      kafka.close().block(QUICKLY); // a sink given to the relay is the caller's to close
      pool.dispose();
      dropOnceReleased(db, table, slot);
    }
    assertThat(fast).as("PostgreSQL stopped by its fast shutdown, not immediately").isTrue();
    java.util.Set<String> payloads = new java.util.HashSet<>();
    world.kafka.readToEnd(topic).forEach(r -> payloads.add(
        new String(r.value(), StandardCharsets.UTF_8)));
    java.util.Set<String> expected = new java.util.HashSet<>();
    expected.add("before");
    for (int i = 0; i < rows; i++) {
      expected.add("row " + i);
    }
    assertThat(payloads).as("every row in Kafka (duplicates allowed)").isEqualTo(expected);
  }

  private static void awaitFollowing(TestPostgres db, String slot) {
    Poll.until("the relay follows the slot", QUICKLY, () -> db.queryLong(
        "SELECT count(*) FROM pg_replication_slots s JOIN pg_stat_activity a"
            + " ON a.pid = s.active_pid WHERE a.backend_type = 'walsender'"
            + " AND s.slot_name = '" + slot + "'") == 1);
  }

  private static void dropOnceReleased(TestPostgres db, OutboxTable table, String slot) {
    Poll.until("the slot is released", QUICKLY, () -> db.queryLong(
        "SELECT count(*) FROM pg_replication_slots WHERE active AND slot_name = '" + slot
            + "'") == 0);
    db.execute("SELECT pg_drop_replication_slot('" + slot + "')",
        "DROP PUBLICATION IF EXISTS " + slot, "DROP TABLE " + table.qualifiedName(),
        "DROP TABLE " + table.deadLetterQualifiedName());
  }

  private static boolean acceptsSessions(TestPostgres db) {
    try {
      return db.queryLong("SELECT 1") == 1;
    } catch (RuntimeException e) {
      return false;
    }
  }
}
