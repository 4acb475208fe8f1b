package dev.outbox.relay;

import static org.assertj.core.api.Assertions.assertThat;

import dev.outbox.r2dbc.Codec;
import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.OutboxTransactions;
import dev.outbox.relay.RelayOutcome.Kind;
import dev.outbox.testing.Poll;
import dev.outbox.testing.PostgresExtension;
import dev.outbox.testing.TestKafka;
import dev.outbox.testing.TestPostgres;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.stream.IntStream;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.common.errors.TimeoutException;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/** ORDERED mode: per-key order across batches, late commits, rollbacks, retries and failover. */
@ExtendWith(PostgresExtension.class)
class RelayOrderedTest {
  private final TestKafka kafka = TestKafka.get();
  private final OutboxFixture outbox;
  private final String audit = TestPostgres.uniqueName("audit");
  private final List<RelayHandle> relays = new ArrayList<>();

  RelayOrderedTest(TestPostgres postgres) {
    outbox = new OutboxFixture(postgres, 24);
  }

  /** Records every committed outbox row in insert order, whatever the relay deletes later. */
  @BeforeEach
  void auditInserts() {
    String t = outbox.table.qualifiedName();
    outbox.postgres.execute(
        "CREATE TABLE " + audit + " (insert_seq BIGINT PRIMARY KEY, raw_data BYTEA NOT NULL)",
        "CREATE FUNCTION " + audit + "_fn() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            + " INSERT INTO " + audit + " VALUES (NEW.insert_seq, NEW.raw_data); RETURN NEW; END $$",
        "CREATE TRIGGER " + audit + "_trg AFTER INSERT ON " + t
            + " FOR EACH ROW EXECUTE FUNCTION " + audit + "_fn()");
  }

  @AfterEach
  void tearDown() {
    relays.forEach(r -> r.stop(Duration.ofSeconds(5)).block(Duration.ofSeconds(10)));
    outbox.close();
  }

  private RelayHandle start(RelayOptions.Builder options, List<RelayOutcome> seen) {
    OutboxRelay relay = OutboxRelay.create(outbox.pool, options.table(outbox.table)
        .mode(RelayMode.ORDERED).pollInterval(Duration.ofMillis(100))
        .leadershipRetry(Duration.ofMillis(300)).build());
    relay.outcomes().subscribe(seen::add);
    RelayHandle handle = relay.start();
    relays.add(handle);
    return handle;
  }

  /** Per key, the committed message ids in insert order, from the audit table. */
  private Map<String, List<String>> committedOrderByKey() {
    Map<String, List<String>> byKey = new LinkedHashMap<>();
    for (Object raw : outbox.postgres.queryColumn("SELECT raw_data FROM " + audit + " ORDER BY insert_seq")) {
      for (Message m : Codec.protobuf().decode(toBytes(raw))) {
        byKey.computeIfAbsent(m.stream() + "/" + m.key().orElse(""), k -> new ArrayList<>()).add(m.id());
      }
    }
    return byKey;
  }

  private static byte[] toBytes(Object raw) {
    if (raw instanceof java.nio.ByteBuffer buffer) {
      byte[] bytes = new byte[buffer.remaining()];
      buffer.get(bytes);
      return bytes;
    }
    return (byte[]) raw;
  }

  /** Asserts each key's first deliveries are exactly its committed messages in order. */
  private static void assertPerKeyOrder(List<ConsumerRecord<String, byte[]>> consumed,
      Map<String, List<String>> expected) {
    Map<String, List<String>> firstSeen = new LinkedHashMap<>();
    Set<String> seenIds = new HashSet<>();
    for (ConsumerRecord<String, byte[]> r : consumed) {
      String id = Delivery.messageId(r);
      if (seenIds.add(id)) {
        firstSeen.computeIfAbsent(r.topic() + "/" + (r.key() == null ? "" : r.key()), k -> new ArrayList<>()).add(id);
      }
    }
    assertThat(firstSeen.keySet()).containsExactlyInAnyOrderElementsOf(expected.keySet());
    expected.forEach((key, ids) -> assertThat(firstSeen.get(key)).as("order of key %s", key).isEqualTo(ids));
  }

  private static List<Message> batch(String topic, String key, int size) {
    return IntStream.range(0, size).mapToObj(i -> Message.builder().stream(topic).key(key)
        .data(("m" + i).getBytes(StandardCharsets.UTF_8)).build()).toList();
  }

  @Test
  void perKeyOrderHoldsWithConcurrentWritersRollbacksAndLateCommits() {
    String topic = TestPostgres.uniqueName("ordered");
    kafka.createTopic(topic, 4);
    List<RelayOutcome> seen = new CopyOnWriteArrayList<>();
    start(RelayOptions.builder().kafka(kafka.producerProperties()), seen);

    // 400 transactions of 5 batches (10 messages of one key each) = 20,000 messages over 200
    // keys, 16 at a time; every 13th rolls back, every 40th holds its transaction open for a
    // while after writing, so later transactions commit first.
    AtomicInteger rolledBack = new AtomicInteger();
    Flux.range(0, 400)
        .flatMap(tx -> OutboxTransactions.inTransaction(outbox.pool, c -> Flux.range(0, 5)
                .concatMap(b -> outbox.writer.write(batch(topic, "k" + ((tx * 5 + b) % 200), 10)))
                .then(tx % 40 == 7 ? Mono.delay(Duration.ofMillis(1500)).then() : Mono.<Void>empty())
                .then(tx % 13 == 5 ? Mono.error(new IllegalStateException("rolled back")) : Mono.<Void>empty()))
            .onErrorResume(IllegalStateException.class, e -> {
              rolledBack.incrementAndGet();
              return Mono.empty();
            }), 16)
        .blockLast(Duration.ofMinutes(2));

    Poll.until("every committed row is published", Duration.ofSeconds(120), () -> outbox.rows() == 0);
    Map<String, List<String>> expected = committedOrderByKey();
    int committed = expected.values().stream().mapToInt(List::size).sum();
    List<ConsumerRecord<String, byte[]>> consumed =
        kafka.consume(List.of(topic), committed, Duration.ofSeconds(60), Duration.ofSeconds(1));
    System.out.printf("ORDERED: %d committed messages (%d transactions rolled back), %d records, %d keys%n",
        committed, rolledBack.get(), consumed.size(), expected.size());
    assertThat(rolledBack.get()).isPositive();
    assertThat(committed).isEqualTo((400 - rolledBack.get()) * 50);
    assertPerKeyOrder(consumed, expected);
  }

  @Test
  void standbyTakesOverWhenTheLeadersConnectionIsKilledAndOrderHolds() {
    String topic = TestPostgres.uniqueName("failover");
    kafka.createTopic(topic, 3);
    outbox.write(600, 20, b -> batch(topic, "k" + (b % 40), 5));
    List<RelayOutcome> first = new CopyOnWriteArrayList<>();
    List<RelayOutcome> second = new CopyOnWriteArrayList<>();
    // A slow sink keeps the leader busy long enough to be killed mid-run.
    start(RelayOptions.builder().sink(TestSinks.slow(KafkaProducerSink.create(kafka.producerProperties(), 64),
        Duration.ofMillis(2))), first);
    Poll.until("the first relay publishes", Duration.ofSeconds(30), () -> first.size() >= 50);
    start(RelayOptions.builder().kafka(kafka.producerProperties()), second);
    assertThat(second).isEmpty(); // a standby publishes nothing while the leader holds the lock

    long killed = outbox.postgres.queryLong("SELECT count(pg_terminate_backend(pid)) FROM pg_locks"
        + " WHERE locktype = 'advisory' AND granted");
    assertThat(killed).isEqualTo(1);

    Poll.until("the standby takes over and drains", Duration.ofSeconds(60),
        () -> outbox.rows() == 0 && !second.isEmpty());
    Map<String, List<String>> expected = committedOrderByKey();
    List<ConsumerRecord<String, byte[]>> consumed =
        kafka.consume(List.of(topic), 3000, Duration.ofSeconds(60), Duration.ofSeconds(1));
    Delivery delivery = new Delivery(consumed);
    System.out.printf("ORDERED failover: first relay %d batches, standby %d batches, %d duplicates%n",
        first.stream().filter(o -> o.kind() == Kind.PUBLISHED).count(),
        second.stream().filter(o -> o.kind() == Kind.PUBLISHED).count(), delivery.duplicates());
    assertThat(second).filteredOn(o -> o.kind() == Kind.PUBLISHED).isNotEmpty();
    assertPerKeyOrder(consumed, expected);
  }

  @Test
  void aRetryOnOneKeyHoldsThatKeyOnlyWhileOtherKeysFlow() {
    outbox.write(1, 1, b -> batch("t", "hot", 1));
    outbox.write(30, 1, b -> batch("t", b % 3 == 0 ? "hot" : "cold" + b, 1));
    AtomicInteger hotFailures = new AtomicInteger();
    List<String> sentKeys = new CopyOnWriteArrayList<>();
    RecordSink sink = TestSinks.answering(r -> {
      sentKeys.add(r.key());
      return "hot".equals(r.key()) && hotFailures.incrementAndGet() <= 3
          ? new TimeoutException("hot partition unavailable") : null;
    });
    List<RelayOutcome> seen = new CopyOnWriteArrayList<>();
    start(RelayOptions.builder().sink(sink).retryPolicy(RetryPolicy.builder()
        .initialBackoff(Duration.ofMillis(300)).jitter(0).build()), seen);

    Poll.until("everything is published", Duration.ofSeconds(30), () -> outbox.rows() == 0);

    List<String> sentHot = sentKeys.stream().filter("hot"::equals).toList();
    assertThat(sentHot).hasSize(3 + 11); // three failed attempts of the first, then 11 batches once
    int lastHotFailure = indexOfNth(sentKeys, "hot", 3);
    long coldWhileHotWaited = sentKeys.subList(0, lastHotFailure).stream()
        .filter(k -> k.startsWith("cold")).count();
    System.out.printf("ORDERED retry: %d other-key records published while the hot key waited%n",
        coldWhileHotWaited);
    assertThat(coldWhileHotWaited).as("other keys flow while one waits").isEqualTo(20);
    assertThat(seen).filteredOn(o -> o.kind() == Kind.RETRY_SCHEDULED).hasSize(3);
  }

  private static int indexOfNth(List<String> values, String value, int n) {
    int count = 0;
    for (int i = 0; i < values.size(); i++) {
      if (value.equals(values.get(i)) && ++count == n) {
        return i;
      }
    }
    return -1;
  }
}
