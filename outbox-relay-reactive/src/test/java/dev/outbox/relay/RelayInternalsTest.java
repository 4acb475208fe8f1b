package dev.outbox.relay;

import static org.assertj.core.api.Assertions.assertThat;

import dev.outbox.r2dbc.Codec;
import dev.outbox.r2dbc.Message;
import dev.outbox.relay.RelayOutcome.Kind;
import dev.outbox.testing.Poll;
import dev.outbox.testing.PostgresExtension;
import dev.outbox.testing.TestKafka;
import dev.outbox.testing.TestPostgres;
import io.r2dbc.spi.Connection;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.IntStream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.reactivestreams.Publisher;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import reactor.core.scheduler.Scheduler;
import reactor.core.scheduler.Schedulers;

/**
 * The relay's internals, each test about one defect found in review: the budget cannot leak,
 * options hold configuration only, stop cleans up whatever happens, outcomes never hold the
 * relay back, CPU work stays off the driver's event loop, and the byte budget holds.
 */
@ExtendWith(PostgresExtension.class)
class RelayInternalsTest {
  private final OutboxFixture outbox;
  private final List<RelayHandle> relays = new ArrayList<>();

  RelayInternalsTest(TestPostgres postgres) {
    outbox = new OutboxFixture(postgres, 8);
  }

  @AfterEach
  void tearDown() {
    relays.forEach(r -> r.stop(Duration.ofSeconds(5)).block(Duration.ofSeconds(10)));
    outbox.close();
  }

  private RelayOptions.Builder options() {
    return RelayOptions.builder().table(outbox.table).pollInterval(Duration.ofMillis(50));
  }

  private RelayHandle start(RelayOptions options) {
    RelayHandle handle = OutboxRelay.create(outbox.pool, options).start();
    relays.add(handle);
    return handle;
  }

  private static List<Message> batch(String stream, int size, int bytesEach) {
    return IntStream.range(0, size)
        .mapToObj(i -> Message.builder().stream(stream).key("k").data(new byte[bytesEach]).build())
        .toList();
  }

  private void insertUndecodable(int rows, int messageCount) {
    for (int i = 0; i < rows; i++) {
      outbox.postgres.execute("INSERT INTO " + outbox.table.qualifiedName()
          + " (batch_id, message_count, raw_data) VALUES ('" + String.format("corrupt%020d", i)
          + "', " + messageCount + ", '\\xdeadbeef')");
    }
  }

  @Test
  void theBudgetDoesNotLeakWhenDeadLetteringAnUndecodableBatchFails() {
    // Ten undecodable rows of ten records fill a 100-record budget in one claim; dead-lettering
    // them fails (the dead-letter table is away). The relay must keep claiming afterwards.
    insertUndecodable(10, 10);
    String deadLetters = outbox.table.deadLetterQualifiedName();
    outbox.postgres.execute("ALTER TABLE " + deadLetters + " RENAME TO away_" + outbox.table.name());
    AtomicInteger sent = new AtomicInteger();
    // PARALLEL: the leases on the rows are what this test watches.
    RelayHandle relay = start(options().mode(RelayMode.PARALLEL).maxInFlight(100).leaseDuration(Duration.ofSeconds(1))
        .sink(TestSinks.answering(r -> {
          sent.incrementAndGet();
          return null;
        })).build());

    Poll.until("the failed dead-letters are given up and the budget freed", Duration.ofSeconds(20),
        () -> outbox.postgres.queryLong("SELECT count(*) FROM " + outbox.table.qualifiedName()
            + " WHERE write_retries = 0 AND lease_token IS NOT NULL") == 10
            && relay.inFlightRecords() == 0);
    outbox.postgres.execute("ALTER TABLE away_" + outbox.table.name() + " RENAME TO "
        + deadLetters.substring(deadLetters.lastIndexOf('.') + 1));
    outbox.write(20, 1, i -> batch("fine", 5, 10));

    Poll.until("good batches are published and bad ones dead-lettered once leases expire",
        Duration.ofSeconds(30), () -> outbox.rows() == 0);
    assertThat(sent).hasValue(100);
    assertThat(outbox.store.deadLetters(100).count().block()).isEqualTo(10);
    Poll.until("nothing counts as in flight", Duration.ofSeconds(5), () -> relay.inFlightRecords() == 0);
  }

  @Test
  void oneOptionsObjectStartsRelaysOneAfterAnotherAndSideBySide() {
    TestKafka kafka = TestKafka.get();
    String topic = TestPostgres.uniqueName("topic");
    kafka.createTopic(topic, 3);
    RelayOptions shared = options().kafka(kafka.producerProperties()).build();

    outbox.write(10, 1, i -> batch(topic, 2, 10));
    RelayHandle first = start(shared);
    Poll.until("the first relay published", Duration.ofSeconds(30), () -> kafka.recordCount(topic) == 20);
    first.stop(Duration.ofSeconds(5)).block(Duration.ofSeconds(10));

    RelayHandle second = start(shared);
    RelayHandle third = start(shared);
    outbox.write(30, 1, i -> batch(topic, 2, 10));
    Poll.until("relays started again from the same options publish", Duration.ofSeconds(30),
        () -> kafka.recordCount(topic) == 80 && outbox.rows() == 0);
    second.stop(Duration.ofSeconds(5)).block(Duration.ofSeconds(10));
    outbox.write(5, 1, i -> batch(topic, 2, 10));
    Poll.until("stopping one relay does not close the others' producer", Duration.ofSeconds(30),
        () -> kafka.recordCount(topic) == 90 && outbox.rows() == 0);
    assertThat(third.inFlightRecords()).isZero();
  }

  @Test
  void aSinkPassedInIsTheCallersAndIsNeverClosed() {
    AtomicBoolean closed = new AtomicBoolean();
    RecordSink answering = TestSinks.answering(r -> null);
    RecordSink owned = new RecordSink() {
      @Override
      public <T> Flux<SendResult<T>> send(Publisher<OutboundRecord<T>> records) {
        return closed.get() ? Flux.error(new IllegalStateException("closed")) : answering.send(records);
      }

      @Override
      public Mono<Void> close() {
        return Mono.fromRunnable(() -> closed.set(true));
      }
    };
    RelayOptions shared = options().sink(owned).build();
    outbox.write(5, 1, i -> batch("any", 1, 10));
    RelayHandle first = start(shared);
    Poll.until("published", Duration.ofSeconds(20), () -> outbox.rows() == 0);
    first.stop(Duration.ofSeconds(5)).block(Duration.ofSeconds(10));
    assertThat(closed).isFalse();

    start(shared);
    outbox.write(5, 1, i -> batch("any", 1, 10));
    Poll.until("published by a second relay on the same sink", Duration.ofSeconds(20), () -> outbox.rows() == 0);
    assertThat(closed).isFalse();
  }

  @Test
  void stopClosesWhatTheRelayOwnsEvenWhenReleasingItsLeasesHangs() {
    TestKafka kafka = TestKafka.get();
    String missingTopic = TestPostgres.uniqueName("missing"); // never created: sends wait for it
    String instance = TestPostgres.uniqueName("stopper");
    Map<String, Object> producer = new HashMap<>(kafka.producerProperties());
    producer.put("max.block.ms", 60_000);
    producer.put("client.id", "outbox-relay-" + instance); // the relay's default, set for clarity
    RelayHandle relay = start(options().mode(RelayMode.ORDERED).instanceId(instance)
        .kafka(producer).build());
    outbox.write(5, 1, i -> List.of(Message.builder().stream(missingTopic).key("k" + i)
        .data(new byte[10]).build()));
    Poll.until("the batches are claimed", Duration.ofSeconds(20), () -> outbox.leasedRows() == 5);
    String producerThread = "kafka-producer-network-thread | outbox-relay-" + instance;
    assertThat(threadAlive(producerThread)).isTrue();
    assertThat(advisoryLocksHeld()).isEqualTo(1);

    // Another transaction locks the claimed rows, so releasing their leases cannot finish.
    Connection locker = Mono.from(outbox.pool.create()).block(Duration.ofSeconds(10));
    try {
      Mono.from(locker.beginTransaction()).block(Duration.ofSeconds(10));
      Flux.from(locker.createStatement("SELECT batch_id FROM " + outbox.table.qualifiedName()
              + " FOR UPDATE").execute())
          .flatMap(result -> result.map(row -> row.get(0))).then().block(Duration.ofSeconds(10));

      long started = System.nanoTime();
      relay.stop(Duration.ofSeconds(3)).block(Duration.ofSeconds(10));
      assertThat(Duration.ofNanos(System.nanoTime() - started)).isLessThan(Duration.ofSeconds(5));
      Poll.until("the relay's producer is closed", Duration.ofSeconds(15), () -> !threadAlive(producerThread));
      Poll.until("the leadership connection is closed", Duration.ofSeconds(10), () -> advisoryLocksHeld() == 0);
    } finally {
      Mono.from(locker.rollbackTransaction()).then(Mono.from(locker.close())).block(Duration.ofSeconds(10));
    }
  }

  /**
   * A PARALLEL claim sent while a table lock holds it back, and then cancelled by a stop: the
   * statement runs on once the lock goes (the driver does not cancel it), and the leases it takes
   * are given back once it answers, not left to expire (60 s here) holding the rows back from
   * every relay.
   */
  @Test
  void aClaimCancelledByAStopGivesItsLeasesBackOnceAnswered() {
    outbox.write(3, 1, i -> batch("any", 1, 10));
    String claim = "query LIKE 'WITH candidates AS%' AND pid <> pg_backend_pid()";
    Connection locker = Mono.from(outbox.pool.create()).block(Duration.ofSeconds(10));
    try {
      Mono.from(locker.beginTransaction()).block(Duration.ofSeconds(10));
      Flux.from(locker.createStatement("LOCK TABLE " + outbox.table.qualifiedName()
              + " IN SHARE MODE").execute())
          .flatMap(result -> result.getRowsUpdated()).then().block(Duration.ofSeconds(10));
      RelayHandle relay = start(options().mode(RelayMode.PARALLEL)
          .leaseDuration(Duration.ofSeconds(60)).sink(TestSinks.answering(r -> null)).build());
      Poll.until("the claim waits for the table lock", Duration.ofSeconds(20), () ->
          outbox.postgres.queryLong("SELECT count(*) FROM pg_stat_activity"
              + " WHERE wait_event_type = 'Lock' AND " + claim) == 1);
      relay.stop(Duration.ofSeconds(1)).block(Duration.ofSeconds(10));
    } finally {
      Mono.from(locker.rollbackTransaction()).then(Mono.from(locker.close()))
          .block(Duration.ofSeconds(10));
    }
    Poll.until("the claim has run", Duration.ofSeconds(10), () -> outbox.postgres.queryLong(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND " + claim) == 0);
    Poll.until("its leases are given back", Duration.ofSeconds(15), () -> outbox.leasedRows() == 0);
    assertThat(outbox.rows()).as("the rows wait for the next relay").isEqualTo(3);
  }

  @Test
  void stopWithNoDrainTimeStillClosesTheRelaysProducer() {
    TestKafka kafka = TestKafka.get();
    String topic = TestPostgres.uniqueName("topic");
    kafka.createTopic(topic, 1);
    String instance = TestPostgres.uniqueName("nodrain");
    RelayHandle relay = start(options().instanceId(instance).kafka(kafka.producerProperties()).build());
    outbox.write(5, 1, i -> batch(topic, 1, 10));
    Poll.until("published", Duration.ofSeconds(30), () -> kafka.recordCount(topic) == 5);
    String producerThread = "kafka-producer-network-thread | outbox-relay-" + instance;
    assertThat(threadAlive(producerThread)).isTrue();

    relay.stop(Duration.ZERO).block(Duration.ofSeconds(10));
    Poll.until("the relay's producer is closed", Duration.ofSeconds(15), () -> !threadAlive(producerThread));
  }

  private long advisoryLocksHeld() {
    return outbox.postgres.queryLong("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        + " AND pid IN (SELECT pid FROM pg_stat_activity WHERE datname = current_database())");
  }

  private static boolean threadAlive(String name) {
    return Thread.getAllStackTraces().keySet().stream().anyMatch(t -> t.getName().equals(name) && t.isAlive());
  }

  @Test
  void aSlowOutcomesSubscriberNeitherHoldsTheRelayBackNorRunsOnItsThreads() {
    outbox.write(300, 10, i -> batch("any", 1, 10));
    AtomicLong dropped = new AtomicLong();
    RelayMetrics counting = new RelayMetrics() {
      @Override
      public void outcomesDropped(long count) {
        dropped.addAndGet(count);
      }
    };
    OutboxRelay relay = OutboxRelay.create(outbox.pool, options().outcomeBuffer(16).metrics(counting)
        .sink(TestSinks.answering(r -> null)).build());
    AtomicInteger received = new AtomicInteger();
    AtomicBoolean completed = new AtomicBoolean();
    Set<String> subscriberThreads = ConcurrentHashMap.newKeySet();
    relay.outcomes().subscribe(outcome -> {
      subscriberThreads.add(Thread.currentThread().getName());
      received.incrementAndGet();
      try {
        Thread.sleep(100); // a subscriber that blocks: allowed on the thread it is given
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
      }
    }, error -> {}, () -> completed.set(true));
    long started = System.nanoTime();
    RelayHandle handle = relay.start();
    relays.add(handle);

    // 300 outcomes at 100 ms each would take 30 s if the relay waited for the subscriber.
    Poll.until("every batch is published", Duration.ofSeconds(20), () -> outbox.rows() == 0);
    assertThat(Duration.ofNanos(System.nanoTime() - started)).isLessThan(Duration.ofSeconds(20));
    Poll.until("every outcome is either delivered or counted as dropped", Duration.ofSeconds(20),
        () -> received.get() + dropped.get() == 300);
    // The subscriber keeps handling one outcome per 100 ms while the relay runs, so how many it
    // received depends on timing; that the relay dropped rather than waited does not.
    assertThat(dropped.get()).as("outcomes dropped for the slow subscriber").isPositive();
    assertThat(received.get()).isPositive().isLessThan(300);
    assertThat(subscriberThreads).allSatisfy(name -> assertThat(name).startsWith("boundedElastic"));

    handle.stop(Duration.ofSeconds(5)).block(Duration.ofSeconds(10));
    Poll.until("the outcomes complete when the relay stops", Duration.ofSeconds(5), completed::get);
  }

  @Test
  void decodingRunsOffTheDatabaseDriversEventLoop() {
    Set<String> decodingThreads = ConcurrentHashMap.newKeySet();
    Codec protobuf = Codec.protobuf();
    Codec watching = new Codec() {
      @Override
      public byte[] encode(List<Message> batch) {
        return protobuf.encode(batch);
      }

      @Override
      public List<Message> decode(byte[] raw) {
        decodingThreads.add(Thread.currentThread().getName());
        return protobuf.decode(raw);
      }
    };
    // An undecodable row first: its dead-letter completes on the driver's thread. And a sink that
    // asks for records from a thread of its own.
    insertUndecodable(1, 1);
    outbox.write(50, 5, i -> batch("any", 2, 10));
    Scheduler sinkThread = Schedulers.newSingle("own-sink");
    RecordSink answering = TestSinks.answering(r -> null);
    RecordSink ownThread = new RecordSink() {
      @Override
      public <T> Flux<SendResult<T>> send(Publisher<OutboundRecord<T>> records) {
        return answering.send(Flux.from(records).publishOn(sinkThread, 2));
      }

      @Override
      public Mono<Void> close() {
        return Mono.empty();
      }
    };
    try {
      start(options().codec(watching).sink(ownThread).build());

      Poll.until("published", Duration.ofSeconds(20), () -> outbox.rows() == 0);
      assertThat(decodingThreads).isNotEmpty()
          .allSatisfy(name -> assertThat(name).startsWith("parallel-"));
    } finally {
      sinkThread.dispose();
    }
  }

  @Test
  void theByteBudgetBoundsStoredDataInFlight() {
    // 40 batches of 10 x 20 KB (200 KB each) against a 1 MB byte budget and a roomy record budget.
    outbox.write(40, 4, i -> batch("any", 10, 20_000));
    AtomicLong mostBytes = new AtomicLong();
    RelayMetrics watching = new RelayMetrics() {
      @Override
      public void inFlightBytes(long bytes) {
        mostBytes.accumulateAndGet(bytes, Math::max);
      }
    };
    RecordSink slow = TestSinks.slow(TestSinks.answering(r -> null), Duration.ofMillis(2));
    start(options().maxInFlight(10_000).maxInFlightBytes(1_000_000).metrics(watching).sink(slow).build());

    Poll.until("published", Duration.ofSeconds(30), () -> outbox.rows() == 0);
    assertThat(mostBytes.get()).isPositive().isLessThanOrEqualTo(1_000_000);
  }

  @Test
  void aBatchLargerThanTheByteBudgetStillGoesAlone() {
    outbox.write(3, 1, i -> batch("any", 10, 50_000)); // 500 KB each, budget 100 KB
    AtomicLong mostBytes = new AtomicLong();
    RelayMetrics watching = new RelayMetrics() {
      @Override
      public void inFlightBytes(long bytes) {
        mostBytes.accumulateAndGet(bytes, Math::max);
      }
    };
    List<RelayOutcome> seen = new CopyOnWriteArrayList<>();
    OutboxRelay relay = OutboxRelay.create(outbox.pool, options().maxInFlightBytes(100_000)
        .metrics(watching).sink(TestSinks.answering(r -> null)).build());
    relay.outcomes().subscribe(seen::add);
    relays.add(relay.start());

    Poll.until("published one at a time", Duration.ofSeconds(20),
        () -> seen.stream().filter(o -> o.kind() == Kind.PUBLISHED).count() == 3);
    assertThat(mostBytes.get()).isGreaterThan(100_000).isLessThan(1_000_000);
  }

  @Test
  void answeredErrorsAreBoundedPerSend() {
    ReactorKafkaSink.AnsweredErrors answered = new ReactorKafkaSink.AnsweredErrors(64);
    List<Throwable> errors = IntStream.range(0, 10_000)
        .mapToObj(i -> (Throwable) new IllegalStateException("e" + i)).toList();
    errors.forEach(answered::remember);
    assertThat(answered.size()).isEqualTo(64);
    assertThat(answered.contains(errors.get(0))).isTrue();
    assertThat(answered.contains(errors.get(9_999))).isFalse();
  }
}
