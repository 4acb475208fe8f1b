package dev.outbox.relay;

import static org.assertj.core.api.Assertions.assertThat;

import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.OutboxContext;
import dev.outbox.r2dbc.OutboxSchema;
import dev.outbox.relay.RelayOutcome.Kind;
import dev.outbox.testing.Poll;
import dev.outbox.testing.PostgresExtension;
import dev.outbox.testing.TestPostgres;
import io.r2dbc.spi.Connection;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.stream.IntStream;
import org.apache.kafka.common.errors.TimeoutException;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/**
 * PARTITIONED mode on real PostgreSQL with recording sinks: relays share partitions, keep each
 * key's order across relays, retries and handovers, and a relay that lost its partition changes
 * nothing.
 */
@ExtendWith(PostgresExtension.class)
class PartitionedRelayTest {
  private static final Duration QUICKLY = Duration.ofSeconds(30);

  private final OutboxFixture outbox;
  private final List<RelayHandle> relays = new ArrayList<>();
  /** Per key, the sequence numbers in the order the sinks acknowledged them (first time only). */
  private final Map<String, List<Integer>> acknowledged = new ConcurrentHashMap<>();
  private final Map<String, Boolean> seen = new ConcurrentHashMap<>();
  private final AtomicInteger duplicates = new AtomicInteger();

  PartitionedRelayTest(TestPostgres postgres) {
    outbox = new OutboxFixture(postgres, 10);
    OutboxSchema.enablePartitions(outbox.pool, outbox.table).block(QUICKLY);
  }

  @AfterEach
  void tearDown() {
    relays.forEach(r -> r.stop(Duration.ofSeconds(5)).block(Duration.ofSeconds(10)));
    outbox.close();
  }

  private RelayOptions.Builder options(String id, RecordSink sink) {
    return RelayOptions.builder().table(outbox.table).mode(RelayMode.PARTITIONED).instanceId(id)
        .sink(sink).pollInterval(Duration.ofMillis(50)).leaseDuration(Duration.ofSeconds(2))
        .leaseRenewal(Duration.ofMillis(300)).retryPolicy(RetryPolicy.builder()
            .initialBackoff(Duration.ofMillis(200)).jitter(0).maxAttempts(50).build());
  }

  private RelayHandle start(RelayOptions options, List<RelayOutcome> outcomes) {
    OutboxRelay relay = OutboxRelay.create(outbox.pool, options);
    relay.outcomes().subscribe(outcomes::add);
    RelayHandle handle = relay.start();
    relays.add(handle);
    return handle;
  }

  /** Acknowledges every record (failing those {@code fails} says), recording first deliveries. */
  private RecordSink recording(java.util.function.Predicate<OutboundRecord<?>> fails) {
    return TestSinks.answering(r -> {
      if (fails.test(r)) {
        return new TimeoutException("broker slow for " + r.key());
      }
      String id = r.headers().get(Message.MESSAGE_ID_HEADER);
      if (seen.putIfAbsent(id, true) != null) {
        duplicates.incrementAndGet();
      } else {
        acknowledged.computeIfAbsent(r.key() == null ? "" : r.key(), k -> new CopyOnWriteArrayList<>())
            .add(ByteBuffer.wrap(r.value()).getInt());
      }
      return null;
    });
  }

  private static Message message(String key, int seq) {
    return Message.builder().stream("orders").key(key).data(ByteBuffer.allocate(4).putInt(seq).array())
        .build();
  }

  /**
   * Writes {@code perKey} rows for each of {@code keys} keys, one key per row, seq ascending, in
   * one transaction (so insert order is seq order for every key).
   */
  private void write(int keys, int perKey, int firstSeq) {
    outbox.write(keys * perKey, keys * perKey, i -> {
      int key = i % keys;
      int seq = firstSeq + i / keys;
      return List.of(message("k" + key, seq * 2), message("k" + key, seq * 2 + 1));
    });
  }

  private long owners() {
    return outbox.postgres.queryLong("SELECT count(DISTINCT owner) FROM "
        + outbox.table.partitionsQualifiedName() + " WHERE owner IS NOT NULL");
  }

  private long ownedBy(String relay) {
    // The owner is the instance id plus a random part per running relay.
    return outbox.postgres.queryLong("SELECT count(*) FROM " + outbox.table.partitionsQualifiedName()
        + " WHERE owner LIKE '" + relay + "#%'");
  }

  private void assertPerKeyOrder() {
    acknowledged.forEach((key, seqs) -> assertThat(seqs).as("key %s", key).isSorted());
  }

  @Test
  void relaysShareThePartitionsRebalanceAndKeepEachKeysOrder() {
    write(40, 30, 0);
    RecordSink sink = TestSinks.slow(recording(r -> false), Duration.ofMillis(1));
    start(options("relay-a", sink).build(), new CopyOnWriteArrayList<>());
    Poll.until("relay-a owns every partition", QUICKLY, () -> ownedBy("relay-a") == 32);

    AtomicInteger readByB = new AtomicInteger(-1);
    AtomicInteger acquiredByB = new AtomicInteger();
    RelayMetrics metricsOfB = new RelayMetrics() {
      @Override
      public void partitions(int read, int takenOver) {
        readByB.set(read);
        acquiredByB.addAndGet(takenOver);
      }
    };
    RelayHandle b = start(options("relay-b", sink).metrics(metricsOfB).build(),
        new CopyOnWriteArrayList<>());
    Poll.until("two relays share the partitions", QUICKLY,
        () -> ownedBy("relay-a") == 16 && ownedBy("relay-b") == 16);
    Poll.until("relay-b's meters say it reads its 16", QUICKLY, () -> readByB.get() == 16);
    assertThat(acquiredByB.get()).isEqualTo(16);
    write(40, 30, 30);
    start(options("relay-c", sink).build(), new CopyOnWriteArrayList<>());
    Poll.until("three relays share the partitions", QUICKLY, () -> owners() == 3);

    b.stop(Duration.ofSeconds(5)).block(Duration.ofSeconds(10));
    Poll.until("a stopped relay's partitions move to the others", QUICKLY,
        () -> ownedBy("relay-b") == 0 && ownedBy("relay-a") + ownedBy("relay-c") == 32);
    Poll.until("everything is published", Duration.ofSeconds(60), () -> outbox.rows() == 0);

    assertThat(acknowledged).hasSize(40);
    assertThat(acknowledged.values()).allSatisfy(seqs -> assertThat(seqs).hasSize(120));
    assertPerKeyOrder();
  }

  @Test
  void aKeyWaitingForARetryHoldsOnlyThatKey() {
    AtomicInteger failures = new AtomicInteger();
    RecordSink sink = recording(r -> "k0".equals(r.key()) && failures.incrementAndGet() <= 12);
    List<RelayOutcome> outcomes = new CopyOnWriteArrayList<>();
    write(10, 20, 0);
    start(options("relay-a", sink).build(), outcomes);

    Poll.until("every other key is published", QUICKLY, () -> IntStream.range(1, 10)
        .allMatch(k -> acknowledged.getOrDefault("k" + k, List.of()).size() == 40));
    assertThat(acknowledged.getOrDefault("k0", List.of())).as("k0 still waits for its retries")
        .hasSizeLessThan(40);
    Poll.until("everything is published", QUICKLY, () -> outbox.rows() == 0);
    assertThat(outcomes).filteredOn(o -> o.kind() == Kind.RETRY_SCHEDULED).isNotEmpty();
    assertThat(acknowledged.get("k0")).hasSize(40);
    assertPerKeyOrder();
  }

  @Test
  void aRelayThatLostItsPartitionsChangesNothing() {
    List<RelayOutcome> outcomes = new CopyOnWriteArrayList<>();
    RecordSink slow = TestSinks.slow(recording(r -> false), Duration.ofMillis(20));
    write(10, 10, 0);
    start(options("relay-a", slow).build(), outcomes);
    Poll.until("relay-a publishes", QUICKLY, () -> !acknowledged.isEmpty());

    // Another owner came and went (what a takeover looks like to a late relay): new epochs.
    outbox.postgres.execute("UPDATE " + outbox.table.partitionsQualifiedName()
        + " SET epoch = epoch + 1");
    Poll.until("everything is published", QUICKLY, () -> outbox.rows() == 0);

    assertThat(outcomes).filteredOn(o -> o.kind() == Kind.LEASE_LOST)
        .as("settlements under the old epoch changed nothing").isNotEmpty();
    assertThat(acknowledged.values().stream().mapToInt(List::size).sum()).isEqualTo(200);
    assertPerKeyOrder();
  }

  @Test
  void aRowWhoseTransactionCommitsLateIsNotSkipped() {
    RecordSink sink = recording(r -> false);
    start(options("relay-a", sink).build(), new CopyOnWriteArrayList<>());
    Poll.until("relay-a owns every partition", QUICKLY, () -> ownedBy("relay-a") == 32);

    Connection late = Mono.from(outbox.pool.create()).block(QUICKLY);
    try {
      Flux.from(late.beginTransaction()).blockLast(QUICKLY);
      outbox.writer.write(List.of(message("late", 0))).contextWrite(OutboxContext.withConnection(late))
          .block(QUICKLY);
      write(5, 4, 0); // later rows, committed first: held behind the commit watermark
      assertThat(acknowledged).doesNotContainKey("late");
      Flux.from(late.commitTransaction()).blockLast(QUICKLY);
    } finally {
      Mono.from(late.close()).block(QUICKLY);
    }
    Poll.until("the late row and the later ones are published", QUICKLY, () -> outbox.rows() == 0);
    assertThat(acknowledged.get("late")).containsExactly(0);
    assertThat(acknowledged.values().stream().mapToInt(List::size).sum()).isEqualTo(1 + 5 * 4 * 2);
  }

  @Test
  void aCommittedRowAboveTheWatermarkHoldsItsKey() {
    AtomicInteger reads = new AtomicInteger();
    RelayMetrics counting = new RelayMetrics() {
      @Override
      public void claimed(int batches, int records, Duration latency) {
        reads.incrementAndGet();
      }
    };
    start(options("relay-a", recording(r -> false)).metrics(counting).build(),
        new CopyOnWriteArrayList<>());
    Poll.until("relay-a owns every partition", QUICKLY, () -> ownedBy("relay-a") == 32);

    Connection early = Mono.from(outbox.pool.create()).block(QUICKLY);
    Connection open = Mono.from(outbox.pool.create()).block(QUICKLY);
    try {
      run(early, "BEGIN");
      run(early, "SELECT txid_current()"); // the lowest transaction id of the three
      run(open, "BEGIN");
      run(open, "SELECT txid_current()"); // holds the watermark between the two writers
      outbox.write(1, 1, i -> List.of(message("k", 1))); // first in insert and commit order
      outbox.writer.write(List.of(message("k", 2))).contextWrite(OutboxContext.withConnection(early))
          .block(QUICKLY);
      run(early, "COMMIT"); // below the watermark: readable, but it must wait for row 1
      int before = reads.get();
      Poll.until("the relay has read twice since", QUICKLY, () -> reads.get() >= before + 2);
      assertThat(acknowledged).doesNotContainKey("k");
      run(open, "COMMIT");
    } finally {
      Mono.from(early.close()).then(Mono.from(open.close())).block(QUICKLY);
    }
    Poll.until("both rows are published", QUICKLY, () -> outbox.rows() == 0);
    assertThat(acknowledged.get("k")).containsExactly(1, 2);
  }

  /**
   * A transaction that drew an earlier insert_seq and commits after a later row was published
   * (that row's transaction started first, so it is below the commit watermark): the relay must
   * not move its read position past the earlier row, or a later row of its key would go first.
   */
  @Test
  void aRowCommittedBehindAPublishedOneStillGoesBeforeLaterRowsOfItsKey() {
    RecordSink sink = recording(r -> false);
    start(options("relay-a", sink).build(), new CopyOnWriteArrayList<>());
    Poll.until("relay-a owns every partition", QUICKLY, () -> ownedBy("relay-a") == 32);

    Connection first = Mono.from(outbox.pool.create()).block(QUICKLY);
    Connection early = Mono.from(outbox.pool.create()).block(QUICKLY);
    try {
      Flux.from(first.beginTransaction()).blockLast(QUICKLY);
      run(first, "SELECT pg_current_xact_id()"); // the older transaction id
      Flux.from(early.beginTransaction()).blockLast(QUICKLY);
      outbox.writer.write(List.of(message("k", 0))).contextWrite(OutboxContext.withConnection(early))
          .block(QUICKLY); // k@0: the earlier insert_seq, not committed yet
      outbox.writer.write(List.of(message("j", 0))).contextWrite(OutboxContext.withConnection(first))
          .block(QUICKLY);
      Flux.from(first.commitTransaction()).blockLast(QUICKLY);
      Poll.until("j, below the watermark, is published", QUICKLY, () -> acknowledged.containsKey("j"));
      Flux.from(early.commitTransaction()).blockLast(QUICKLY);
    } finally {
      Mono.from(first.close()).block(QUICKLY);
      Mono.from(early.close()).block(QUICKLY);
    }
    outbox.write(1, 1, i -> List.of(message("k", 1))); // k@1, after k@0 committed
    Poll.until("everything is published", QUICKLY, () -> outbox.rows() == 0);
    assertThat(acknowledged.get("k")).containsExactly(0, 1);
  }

  private static void run(Connection c, String sql) {
    Flux.from(c.createStatement(sql).execute()).concatMap(r -> r.getRowsUpdated()).blockLast(QUICKLY);
  }

  @Test
  void aKeysNextRowGoesOutOnceKafkaHasThePreviousOneNotOnlyAfterItsDelete() {
    write(1, 3, 0); // k0: three rows, two messages each
    String first = (String) outbox.postgres.queryColumn("SELECT batch_id FROM " + outbox.table.qualifiedName()
        + " ORDER BY insert_seq LIMIT 1").get(0);
    // Another transaction holds the first row locked, so its DELETE waits; ownership lasts
    // longer than the wait (a waiting DELETE also holds its partition's row share-locked, and
    // with it the renewal).
    Connection locker = Mono.from(outbox.pool.create()).block(QUICKLY);
    try {
      Flux.from(locker.beginTransaction()).blockLast(QUICKLY);
      run(locker, "SELECT 1 FROM " + outbox.table.qualifiedName() + " WHERE batch_id = '" + first + "' FOR UPDATE");
      start(options("relay-a", recording(r -> false)).leaseDuration(Duration.ofSeconds(20))
          .leaseRenewal(Duration.ofSeconds(2)).build(), new CopyOnWriteArrayList<>());

      Poll.until("the later rows are in Kafka while the first row's DELETE waits", Duration.ofSeconds(8),
          () -> acknowledged.getOrDefault("k0", List.of()).size() == 6);
      assertThat(outbox.postgres.queryLong("SELECT count(*) FROM " + outbox.table.qualifiedName()
          + " WHERE batch_id = '" + first + "'")).as("the first row is still there").isEqualTo(1);
      Flux.from(locker.commitTransaction()).blockLast(QUICKLY);
    } finally {
      Mono.from(locker.close()).block(QUICKLY);
    }
    Poll.until("everything is deleted", QUICKLY, () -> outbox.rows() == 0);
    assertThat(acknowledged.get("k0")).containsExactly(0, 1, 2, 3, 4, 5);
    assertThat(duplicates).hasValue(0);
  }

  /**
   * One hot key: the rows of it that one read takes go out as one unit (many records of the key
   * in flight at once, not one row per round trip); a record that fails stops the unit's later
   * records, which are retried after it, so the key's first deliveries stay in order.
   */
  @Test
  void aHotKeysRowsGoOutTogetherAndAFailureHoldsBackTheRestOfThem() {
    java.util.concurrent.atomic.AtomicBoolean failedOnce = new java.util.concurrent.atomic.AtomicBoolean();
    List<Integer> firstDeliveries = new CopyOnWriteArrayList<>();
    java.util.Set<Integer> seenValues = java.util.concurrent.ConcurrentHashMap.newKeySet();
    TestSinks.Guarding sink = new TestSinks.Guarding(r -> {
      int value = ByteBuffer.wrap(r.value()).getInt();
      if (value == 10 && failedOnce.compareAndSet(false, true)) {
        return new TimeoutException("broker slow for " + r.key());
      }
      if (seenValues.add(value)) {
        firstDeliveries.add(value);
      }
      return null;
    }, Duration.ofMillis(20));
    write(1, 20, 0); // k0: 20 rows of two messages
    start(options("relay-a", sink).build(), new CopyOnWriteArrayList<>());

    Poll.until("everything is published", QUICKLY, () -> outbox.rows() == 0);
    assertThat(failedOnce).isTrue();
    assertThat(firstDeliveries).as("first deliveries of k0").hasSize(40).isSorted();
    assertThat(sink.maxOutstanding.get()).as("records of the one key in flight at once")
        .isGreaterThan(2);
  }

  /**
   * Two rows of one key sent as one unit both fail (the first on its own, the second by
   * the guard) and get different retry times; the first is due first, is passed while its key is
   * still held for the second, the read position moves past it, and the second's rewind (to its
   * own seq) then lets the second go out before the first.
   */
  @Test
  void rowsOfAUnitDueAtDifferentTimesKeepTheirOrder() {
    java.util.concurrent.atomic.AtomicBoolean failedOnce = new java.util.concurrent.atomic.AtomicBoolean();
    List<Integer> firstDeliveries = new CopyOnWriteArrayList<>();
    java.util.Set<Integer> seenValues = ConcurrentHashMap.newKeySet();
    TestSinks.Guarding sink = new TestSinks.Guarding(r -> {
      int value = ByteBuffer.wrap(r.value()).getInt();
      if (value == 0 && failedOnce.compareAndSet(false, true)) {
        return new TimeoutException("broker slow for " + r.key());
      }
      if (seenValues.add(value)) {
        firstDeliveries.add(value);
      }
      return null;
    }, Duration.ofMillis(20));
    write(1, 2, 0); // k0: row A (0, 1), row B (2, 3)
    // B failed three times before (say in an earlier outage): its next backoff is longer than A's.
    outbox.postgres.queryLong("WITH u AS (UPDATE " + outbox.table.qualifiedName()
        + " SET write_retries = 3 WHERE insert_seq = (SELECT max(insert_seq) FROM "
        + outbox.table.qualifiedName() + ") RETURNING 1) SELECT count(*) FROM u");
    start(options("relay-a", sink).leaseDuration(Duration.ofSeconds(10)).build(),
        new CopyOnWriteArrayList<>());

    Poll.until("everything is published", QUICKLY, () -> outbox.rows() == 0);
    assertThat(failedOnce).isTrue();
    assertThat(firstDeliveries).as("first deliveries of k0").containsExactly(0, 1, 2, 3);
  }


  /**
   * a key's first row fails (retriably) on every attempt; the rows behind it in its unit
   * are never tried on their own, yet each attempt of the first costs them one too, and when the
   * first is dead-lettered for exhausted retries, they are as well (before the units, only the
   * failing row was dead-lettered and the next rows went out).
   */
  @Test
  void onlyTheFailingRowOfAUnitIsDeadLettered() {
    TestSinks.Guarding sink = new TestSinks.Guarding(r -> ByteBuffer.wrap(r.value()).getInt() == 0
        ? new TimeoutException("broker slow for " + r.key()) : null, Duration.ofMillis(5));
    write(1, 4, 0); // k0: rows (0,1) (2,3) (4,5) (6,7)
    List<RelayOutcome> outcomes = new CopyOnWriteArrayList<>();
    start(options("relay-a", sink).retryPolicy(RetryPolicy.builder()
        .initialBackoff(Duration.ofMillis(100)).jitter(0).maxAttempts(3).build()).build(), outcomes);

    Poll.until("everything is settled", QUICKLY, () -> outbox.rows() == 0);
    assertThat(outcomes).filteredOn(o -> o.kind() == Kind.DEAD_LETTERED).as("dead letters").hasSize(1);
  }

  @Test
  void behindASinkThatCannotSeeTheGuardAKeyHasOneRowInFlight() {
    TestSinks.Probe probe = new TestSinks.Probe(TestSinks.slow(recording(r -> false), Duration.ofMillis(5)));
    write(1, 10, 0);
    start(options("relay-a", probe).build(), new CopyOnWriteArrayList<>());

    Poll.until("everything is published", QUICKLY, () -> outbox.rows() == 0);
    assertThat(probe.maxOutstanding.get()).as("one row (two records) at a time").isLessThanOrEqualTo(2);
    assertPerKeyOrder();
  }

  @Test
  void aRowParkedForEverHoldsOnlyItsKey() {
    // An operator parks a row: next_attempt_at = 'infinity'. Reads must not fail on it (it was
    // an int8 overflow once timestamps were read as microseconds); only its key waits.
    write(4, 3, 0);
    outbox.postgres.execute("UPDATE " + outbox.table.qualifiedName() + " SET next_attempt_at = 'infinity'"
        + " WHERE insert_seq = (SELECT min(insert_seq) FROM " + outbox.table.qualifiedName()
        + " WHERE message_keys[1] LIKE '%k0')");
    start(options("relay-a", recording(r -> false)).build(), new CopyOnWriteArrayList<>());

    Poll.until("every other row is published", QUICKLY, () -> outbox.rows() == 3);
    assertThat(acknowledged.keySet()).containsExactlyInAnyOrder("k1", "k2", "k3");
    assertThat(outbox.postgres.queryLong("SELECT count(*) FROM " + outbox.table.qualifiedName()
        + " WHERE message_keys[1] LIKE '%k0'")).isEqualTo(3);
    assertPerKeyOrder();
  }

  @Test
  void rowsWithoutKeysAreSpreadAndPublished() {
    List<RelayOutcome> outcomes = new CopyOnWriteArrayList<>();
    outbox.write(50, 10, i -> List.of(Message.builder().stream("orders")
        .data(ByteBuffer.allocate(4).putInt(i).array()).build()));
    assertThat(outbox.postgres.queryLong("SELECT count(DISTINCT outbox_partition) FROM "
        + outbox.table.qualifiedName())).as("spread by batch id").isGreaterThan(8);
    start(options("relay-a", recording(r -> false)).build(), outcomes);
    Poll.until("everything is published", QUICKLY, () -> outbox.rows() == 0);
    Poll.until("every outcome is seen", QUICKLY,
        () -> outcomes.stream().filter(o -> o.kind() == Kind.PUBLISHED).count() == 50);
  }

  @Test
  void withoutThePartitionTablesHealthSaysWhatToApply() {
    outbox.postgres.execute("DROP TABLE " + outbox.table.partitionsQualifiedName());
    RelayHandle relay = start(options("relay-a", recording(r -> false)).build(),
        new CopyOnWriteArrayList<>());
    Poll.until("health names the missing step", QUICKLY, () -> relay.health().reasons().stream()
        .anyMatch(reason -> reason.contains("enablePartitions")));
    assertThat(relay.health().isUp()).isFalse();
  }
}
