package dev.outbox.relay;

import static org.assertj.core.api.Assertions.assertThat;

import dev.outbox.r2dbc.DeadLetter;
import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.StoredBatch;
import dev.outbox.relay.RelayOutcome.Kind;
import dev.outbox.testing.Poll;
import dev.outbox.testing.PostgresExtension;
import dev.outbox.testing.TestPostgres;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.kafka.common.errors.RecordTooLargeException;
import org.apache.kafka.common.errors.TimeoutException;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** Settlement logic (retry, dead letter, undecodable rows) on real PostgreSQL with fake sinks. */
@ExtendWith(PostgresExtension.class)
class RelaySettlementPostgresTest {
  private final OutboxFixture outbox;
  private RelayHandle relay;

  RelaySettlementPostgresTest(TestPostgres postgres) {
    outbox = new OutboxFixture(postgres, 6);
  }

  @AfterEach
  void tearDown() {
    if (relay != null) {
      relay.stop(Duration.ofSeconds(5)).block(Duration.ofSeconds(10));
    }
    outbox.close();
  }

  private static List<Message> batch(String stream, String key, int size) {
    return java.util.stream.IntStream.range(0, size)
        .mapToObj(i -> Message.builder().stream(stream).key(key)
            .data(("m" + i).getBytes(StandardCharsets.UTF_8)).build())
        .toList();
  }

  private RelayHandle start(String mode, RecordSink sink, RetryPolicy retry, List<RelayOutcome> seen) {
    OutboxRelay relay = OutboxRelay.create(outbox.pool, RelayOptions.builder()
        .table(outbox.table).mode(RelayMode.valueOf(mode)).sink(sink).retryPolicy(retry)
        .pollInterval(Duration.ofMillis(50)).build());
    relay.outcomes().subscribe(seen::add);
    return relay.start();
  }

  @ParameterizedTest
  @ValueSource(strings = {"PARTITIONED", "PARALLEL"}) // the default, and the deprecated lease mode
  void retriableFailuresAreRetriedWithBackoffThenPublished(String mode) {
    AtomicInteger attempts = new AtomicInteger();
    RecordSink flaky = TestSinks.answering(r -> r.topic().equals("flaky") && attempts.incrementAndGet() <= 2
        ? new TimeoutException("broker slow") : null);
    outbox.write(1, 1, i -> batch("flaky", "k", 1));
    outbox.write(5, 1, i -> batch("fine", "k" + i, 2));
    List<RelayOutcome> seen = new CopyOnWriteArrayList<>();

    relay = start(mode, flaky, RetryPolicy.builder().maxAttempts(5).initialBackoff(Duration.ofMillis(200))
        .jitter(0).build(), seen);

    // Outcomes are emitted just after their statement commits: wait for them, not only the rows.
    Poll.until("every batch is published", Duration.ofSeconds(20), () -> outbox.rows() == 0
        && seen.stream().filter(o -> o.kind() == Kind.PUBLISHED).count() == 6);
    assertThat(seen).filteredOn(o -> o.kind() == Kind.RETRY_SCHEDULED).hasSize(2)
        .allSatisfy(o -> assertThat(o.reason()).contains("TimeoutException: broker slow"));
    assertThat(seen).filteredOn(o -> o.kind() == Kind.RETRY_SCHEDULED)
        .extracting(RelayOutcome::retryIn)
        .containsExactly(Duration.ofMillis(200), Duration.ofMillis(400));
    assertThat(seen).filteredOn(o -> o.kind() == Kind.PUBLISHED).hasSize(6);
  }

  @ParameterizedTest
  @ValueSource(strings = {"PARTITIONED", "PARALLEL"}) // the default, and the deprecated lease mode
  void retryStateIsKeptInTheRow(String mode) {
    RecordSink failing = TestSinks.answering(r -> new TimeoutException("x".repeat(400)));
    outbox.write(1, 1, i -> batch("s", "k", 1));
    String id = (String) outbox.postgres.queryColumn(
        "SELECT batch_id FROM " + outbox.table.qualifiedName()).get(0);

    relay = start(mode, failing, RetryPolicy.builder().maxAttempts(10)
        .initialBackoff(Duration.ofMinutes(10)).maxBackoff(Duration.ofMinutes(10)).jitter(0).build(),
        new CopyOnWriteArrayList<>());

    Poll.until("the first failure is recorded", Duration.ofSeconds(10),
        () -> outbox.store.find(id).block().writeRetries() == 1);
    StoredBatch row = outbox.store.find(id).block();
    assertThat(row.lastWriteError()).startsWith("TimeoutException: xxx").hasSize(255);
    assertThat(row.nextAttemptAt()).isAfter(Instant.now().plus(Duration.ofMinutes(9)));
    assertThat(row.inFlight()).isFalse();
    assertThat(row.leaseToken()).isNull();
  }

  @ParameterizedTest
  @ValueSource(strings = {"PARTITIONED", "PARALLEL"}) // the default, and the deprecated lease mode
  void exhaustedRetriesAndFatalErrorsDeadLetterWhileOtherBatchesFlow(String mode) {
    RecordSink sink = TestSinks.answering(r -> switch (r.topic()) {
      case "always-down" -> new TimeoutException("still down");
      case "too-big" -> new RecordTooLargeException("The message is 2000000 bytes");
      default -> null;
    });
    outbox.write(1, 1, i -> batch("always-down", "a", 1));
    outbox.write(1, 1, i -> batch("too-big", "b", 3));
    outbox.write(20, 5, i -> batch("fine", "k" + i, 1));
    List<RelayOutcome> seen = new CopyOnWriteArrayList<>();

    relay = start(mode, sink, RetryPolicy.builder().maxAttempts(3).initialBackoff(Duration.ofMillis(50))
        .jitter(0).build(), seen);

    Poll.until("the outbox is empty", Duration.ofSeconds(20), () -> outbox.rows() == 0
        && seen.stream().filter(o -> o.kind() == Kind.PUBLISHED).count() == 20
        && seen.stream().filter(o -> o.kind() == Kind.DEAD_LETTERED).count() == 2);
    assertThat(seen).filteredOn(o -> o.kind() == Kind.PUBLISHED).hasSize(20);
    List<DeadLetter> dead = outbox.store.deadLetters(10).collectList().block();
    assertThat(dead).hasSize(2);
    assertThat(dead).extracting(DeadLetter::reason).anySatisfy(reason -> assertThat(reason)
        .isEqualTo("RecordTooLargeException: The message is 2000000 bytes"));
    assertThat(dead).extracting(DeadLetter::reason).anySatisfy(reason -> assertThat(reason)
        .startsWith("retries exhausted after 3 attempts").contains("still down"));
    assertThat(dead).filteredOn(d -> d.reason().startsWith("retries")).extracting(DeadLetter::writeRetries)
        .containsExactly(3);
    assertThat(seen).filteredOn(o -> o.kind() == Kind.DEAD_LETTERED).hasSize(2);
  }

  @ParameterizedTest
  @ValueSource(strings = {"PARTITIONED", "PARALLEL"}) // the default, and the deprecated lease mode
  void undecodableRowsAreDeadLetteredWithoutBeingSent(String mode) {
    AtomicInteger sent = new AtomicInteger();
    RecordSink counting = TestSinks.answering(r -> {
      sent.incrementAndGet();
      return null;
    });
    outbox.postgres.execute("INSERT INTO " + outbox.table.qualifiedName()
        + " (batch_id, message_count, raw_data) VALUES ('corrupt00000000000000000001', 1, '\\xdeadbeef')");
    outbox.write(3, 1, i -> batch("fine", "k", 1));

    relay = start(mode, counting, RetryPolicy.DEFAULT, new CopyOnWriteArrayList<>());

    Poll.until("the outbox is empty", Duration.ofSeconds(20), () -> outbox.rows() == 0);
    DeadLetter dead = outbox.store.findDeadLetter("corrupt00000000000000000001").block();
    assertThat(dead.reason()).startsWith("undecodable raw_data: UndecodableBatchException");
    assertThat(sent).hasValue(3);
    Poll.until("the dead-lettered batch no longer counts as in flight", Duration.ofSeconds(5),
        () -> relay.inFlightRecords() == 0);
  }
}
