package dev.outbox.spring.boot;

import static org.assertj.core.api.Assertions.assertThat;

import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.r2dbc.OutboxWriter;
import dev.outbox.relay.RelayMode;
import dev.outbox.relay.RelayOptions;
import dev.outbox.testing.Poll;
import dev.outbox.testing.TestKafka;
import dev.outbox.testing.TestPostgres;
import io.r2dbc.spi.ConnectionFactory;
import java.time.Duration;
import java.util.List;
import java.util.Set;
import java.util.stream.Collectors;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.springframework.boot.diagnostics.FailureAnalysis;
import org.springframework.boot.test.context.runner.ApplicationContextRunner;
import org.springframework.r2dbc.core.DatabaseClient;
import org.springframework.transaction.reactive.TransactionalOperator;
import reactor.core.publisher.Flux;

/**
 * {@code outbox.delete-once-logged}: the starter's writer logs its batches only once the embedded WAL
 * relay's slot carries them, and that relay publishes them from the log (real PostgreSQL with
 * {@code wal_level=logical}, real Kafka); with a polling relay, startup fails saying what to set.
 */
class DeleteOnceLoggedStarterTest {
  private static final Duration WAIT = Duration.ofSeconds(60);
  private final String table = TestPostgres.uniqueName("starter_logged_outbox");
  private final String slot = TestPostgres.uniqueName("starter_logged_slot");
  private final ApplicationContextRunner runner = StarterTests.runner(table);

  /** The relay's walsender lets the slot go a moment after the context closed: wait for it. */
  @AfterEach
  void dropSlotAndPublication() {
    TestPostgres postgres = TestPostgres.get();
    Poll.until("the slot is released", WAIT, () -> postgres.queryLong("SELECT count(*) FROM"
        + " pg_replication_slots WHERE active AND slot_name = '" + slot + "'") == 0);
    postgres.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
        + " WHERE slot_name = '" + slot + "'", "DROP PUBLICATION IF EXISTS " + slot);
    assertThat(postgres.queryLong("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '"
        + slot + "'")).as("slot dropped").isZero();
  }

  @Test
  void theEmbeddedWalRelayPublishesRowsTheStartersWriterDeletedOnceLogged() {
    String topic = TestPostgres.uniqueName("starter_logged_orders");
    TestKafka.get().createTopic(topic, 2);
    runner.withPropertyValues("outbox.relay.mode=wal", "outbox.delete-once-logged=true",
            "outbox.relay.wal-slot=" + slot, "outbox.relay.wal-publication=" + slot)
        .run(context -> {
          assertThat(context).hasNotFailed();
          // outbox.relay.max-in-flight unset: WAL mode's own default, not the claim modes'.
          assertThat(context.getBean(EmbeddedRelay.class).options().maxInFlight())
              .isEqualTo(RelayOptions.DEFAULT_WAL_MAX_IN_FLIGHT);
          // The writer logs only once the relay's slot is ready and its publication carries
          // the table; before that it inserts rows (and the relay sweeps them).
          Poll.until("the relay's slot is ready and its publication marked", WAIT,
              () -> TestPostgres.get().queryLong("SELECT count(*) FROM pg_replication_slots s,"
                  + " pg_publication p WHERE s.slot_name = '" + slot + "' AND s.confirmed_flush_lsn"
                  + " IS NOT NULL AND p.pubname = '" + slot + "' AND obj_description(p.oid,"
                  + " 'pg_publication') = '" + dev.outbox.r2dbc.internal.LoggedBatch.READER_MARK
                  + "'") == 1);
          OutboxWriter writer = context.getBean(OutboxWriter.class);
          TransactionalOperator tx = context.getBean(TransactionalOperator.class);
          DatabaseClient database = DatabaseClient.create(context.getBean(ConnectionFactory.class));

          // Counted inside the writing transaction, before its commit: 0 only if the writer
          // inserted no rows (after the commit, the relay's own DELETE could also empty it).
          Long leftInTransaction = Flux.range(1, 3)
              .concatMap(i -> writer.write(Message.builder().stream(topic).key("order-" + i)
                  .data("placed " + i).build()))
              .then(database.sql("SELECT count(*) FROM " + table)
                  .map(row -> row.get(0, Long.class)).one())
              .as(tx::transactional)
              .block(Duration.ofSeconds(10));
          assertThat(leftInTransaction)
              .as("the writer logged its batches, no rows, in the writing transaction").isZero();

          List<ConsumerRecord<String, byte[]>> records =
              TestKafka.get().consume(List.of(topic), 3, WAIT, Duration.ZERO);
          Set<String> keys = records.stream().map(ConsumerRecord::key).collect(Collectors.toSet());
          assertThat(keys).containsExactlyInAnyOrder("order-1", "order-2", "order-3");
        });
  }

  @Test
  void withAPollingRelayStartupFailsSayingWhatToSet() {
    runner.withPropertyValues("outbox.relay.mode=partitioned", "outbox.delete-once-logged=true")
        .run(context -> {
          assertThat(context).hasFailed();
          FailureAnalysis analysis = StarterTests.analyze(context.getStartupFailure());
          assertThat(analysis.getDescription()).contains("outbox.delete-once-logged=true")
              .contains("PARTITIONED");
          assertThat(analysis.getAction()).contains("outbox.relay.mode=wal");
        });
    // Checked as customizers leave the relay: a mode or slot changed there fails too.
    runner.withPropertyValues("outbox.relay.mode=wal", "outbox.delete-once-logged=true")
        .withBean(RelayOptionsCustomizer.class, () -> options -> options.mode(RelayMode.PARTITIONED))
        .run(context -> assertThat(StarterTests.analyze(context.getStartupFailure())
            .getDescription()).contains("PARTITIONED"));
    runner.withPropertyValues("outbox.relay.mode=wal", "outbox.delete-once-logged=true")
        .withBean(RelayOptionsCustomizer.class, () -> options -> options.walSlot("another_slot"))
        .run(context -> {
          FailureAnalysis analysis = StarterTests.analyze(context.getStartupFailure());
          assertThat(analysis.getDescription()).contains("another_slot")
              .contains(OutboxTable.of(table).walRelayName());
          assertThat(analysis.getAction()).contains("outbox.relay.wal-slot");
        });
    // With the relay off (a standalone WAL relay publishes the table), the writer is built.
    runner.withPropertyValues("outbox.relay.enabled=false", "outbox.delete-once-logged=true")
        .run(context -> assertThat(context).hasNotFailed().hasSingleBean(OutboxWriter.class));
  }
}
