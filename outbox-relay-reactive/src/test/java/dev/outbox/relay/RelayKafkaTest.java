package dev.outbox.relay;

import static org.assertj.core.api.Assertions.assertThat;

import dev.outbox.r2dbc.Codec;
import dev.outbox.r2dbc.DeadLetter;
import dev.outbox.r2dbc.Message;
import dev.outbox.relay.RelayOutcome.Kind;
import dev.outbox.testing.Poll;
import dev.outbox.testing.PostgresExtension;
import dev.outbox.testing.TestKafka;
import dev.outbox.testing.TestPostgres;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.IntStream;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import reactor.core.Disposable;
import reactor.core.publisher.Flux;

/** The relay against real PostgreSQL and a real Kafka broker. */
@ExtendWith(PostgresExtension.class)
class RelayKafkaTest {
  private final TestKafka kafka = TestKafka.get();
  private final OutboxFixture outbox;
  private final List<RelayHandle> relays = new ArrayList<>();

  RelayKafkaTest(TestPostgres postgres) {
    outbox = new OutboxFixture(postgres, 12);
  }

  @AfterEach
  void tearDown() {
    relays.forEach(r -> r.stop(Duration.ofSeconds(5)).block(Duration.ofSeconds(10)));
    outbox.close();
  }

  private String topic(int partitions) {
    String name = TestPostgres.uniqueName("topic");
    kafka.createTopic(name, partitions);
    return name;
  }

  private RelayOptions.Builder options() {
    return RelayOptions.builder().table(outbox.table).pollInterval(Duration.ofMillis(100))
        .retryPolicy(RetryPolicy.builder().initialBackoff(Duration.ofMillis(200))
            .maxBackoff(Duration.ofSeconds(2)).build());
  }

  private RelayHandle start(RelayOptions options, List<RelayOutcome> seen) {
    OutboxRelay relay = OutboxRelay.create(outbox.pool, options);
    relay.outcomes().subscribe(seen::add);
    RelayHandle handle = relay.start();
    relays.add(handle);
    return handle;
  }

  private static Message message(String topic, String key, int i, int size) {
    byte[] data = new byte[size];
    java.util.Arrays.fill(data, (byte) i);
    return Message.builder().stream(topic).key(key).header("trace", "t-" + i)
        .contentType("application/test").data(data)
        .time(Instant.parse("2026-01-01T00:00:00Z").plusMillis(i)).build();
  }

  @Test
  void tenThousandMessagesInAThousandBatchesArriveIntact() {
    List<String> topics = List.of(topic(3), topic(3), topic(1));
    List<Message> rolledBack = List.of(message(topics.get(0), "k", -1, 10),
        Message.builder().stream(topics.get(1)).data(new byte[] {1}).build());
    outbox.writeRolledBack(rolledBack);
    List<Message> written = outbox.write(1000, 20, b -> IntStream.range(0, 10)
        .mapToObj(j -> b % 7 == 0
            ? Message.builder().stream(topics.get(b % 3)).data(("no key " + b).getBytes(StandardCharsets.UTF_8))
                .time(Instant.parse("2026-01-01T00:00:00Z").plusMillis(b)).build()
            : message(topics.get(b % 3), "key-" + (b % 50), b * 10 + j, 50))
        .toList());
    outbox.writeRolledBack(rolledBack);
    List<RelayOutcome> seen = new CopyOnWriteArrayList<>();

    start(options().kafka(kafka.producerProperties()).build(), seen);

    Poll.until("every outbox row is gone", Duration.ofSeconds(120), () -> outbox.rows() == 0
        && seen.stream().filter(o -> o.kind() == Kind.PUBLISHED).count() == 1000);
    List<ConsumerRecord<String, byte[]>> consumed =
        kafka.consume(topics, 10_000, Duration.ofSeconds(60), Duration.ofSeconds(1));
    System.out.printf("10,000 messages: topics hold %d records, consumer read %d%n",
        topics.stream().mapToLong(kafka::recordCount).sum(), consumed.size());
    Delivery delivery = new Delivery(consumed);
    delivery.assertAtLeastOnce(written);
    Delivery.assertSameContent(consumed, written);
    assertThat(delivery.duplicates()).as("duplicates without faults").isZero();
    assertThat(seen).filteredOn(o -> o.kind() == Kind.PUBLISHED).hasSize(1000);
    assertThat(outbox.store.deadLetters(10).collectList().block()).isEmpty();
  }

  @Test
  void aRecordInterceptorReplacesTheHeadersOfTheRecordsItTakesAndHearsTheirAnswers() {
    String topic = topic(2);
    // Messages with header "trace" are intercepted; one of them makes the interceptor throw.
    List<Message> written = outbox.write(4, 2, b -> List.of(message(topic, "k" + b, b, 10),
        Message.builder().stream(topic).key("plain" + b).data(new byte[] {1}).build()));
    Map<String, Throwable> answered = new java.util.concurrent.ConcurrentHashMap<>();
    AtomicLong intercepted = new AtomicLong();
    RecordInterceptor interceptor = (message, headers) -> {
      if (!message.headers().containsKey("trace")) {
        return null;
      }
      if (message.headers().get("trace").equals("t-3")) {
        throw new IllegalStateException("interceptor bug");
      }
      intercepted.incrementAndGet();
      Map<String, String> replaced = new HashMap<>(headers);
      replaced.put("trace", headers.get("trace") + "-seen");
      return new RecordInterceptor.Interception() {
        @Override
        public Map<String, String> headers() {
          return replaced;
        }

        @Override
        public void answered(Throwable error) {
          answered.put(message.id(), error == null ? new Throwable("acked") : error);
        }
      };
    };
    List<RelayOutcome> seen = new CopyOnWriteArrayList<>();

    start(options().kafka(kafka.producerProperties()).recordInterceptor(interceptor).build(), seen);

    Poll.until("every outbox row is gone", Duration.ofSeconds(60), () -> outbox.rows() == 0);
    List<ConsumerRecord<String, byte[]>> consumed =
        kafka.consume(List.of(topic), 8, Duration.ofSeconds(30), Duration.ofMillis(200));
    Map<String, String> traceByKey = new HashMap<>();
    consumed.forEach(r -> {
      var trace = r.headers().lastHeader("trace");
      traceByKey.put(r.key(), trace == null ? null : new String(trace.value(), StandardCharsets.UTF_8));
      assertThat(r.headers().lastHeader(Message.MESSAGE_ID_HEADER)).isNotNull();
    });
    assertThat(traceByKey).containsEntry("k0", "t-0-seen").containsEntry("k1", "t-1-seen")
        .containsEntry("k2", "t-2-seen")
        .containsEntry("k3", "t-3") // the interceptor threw: sent as built
        .containsEntry("plain0", null);
    assertThat(intercepted.get()).isEqualTo(3);
    Poll.until("each intercepted record's answer is heard", Duration.ofSeconds(10),
        () -> answered.size() == 3);
    assertThat(answered.values()).allSatisfy(t -> assertThat(t).hasMessage("acked"));
    assertThat(answered.keySet()).containsExactlyInAnyOrderElementsOf(written.stream()
        .filter(m -> m.key().orElseThrow().startsWith("k") && !m.key().get().equals("k3"))
        .map(Message::id).toList());
  }

  @Test
  void poisonBatchesAreDeadLetteredWhileOthersFlowAndAFixedBatchCanBeRedriven() {
    String good = topic(2);
    Map<String, Object> producer = new HashMap<>(kafka.producerProperties());
    producer.put("max.request.size", 100_000);
    outbox.write(1, 1, i -> List.of(Message.builder().stream("not a legal topic!").data(new byte[] {1}).build()));
    outbox.write(1, 1, i -> List.of(message(good, "big", 1, 200_000)));
    List<Message> fine = outbox.write(50, 10, i -> List.of(message(good, "k" + i, i, 20)));
    List<RelayOutcome> seen = new CopyOnWriteArrayList<>();

    start(options().kafka(producer).build(), seen);

    Poll.until("only dead letters are left", Duration.ofSeconds(60), () -> outbox.rows() == 0
        && seen.stream().filter(o -> o.kind() == Kind.PUBLISHED).count() == 50
        && seen.stream().filter(o -> o.kind() == Kind.DEAD_LETTERED).count() == 2);
    List<DeadLetter> dead = outbox.store.deadLetters(10).collectList().block();
    assertThat(dead).extracting(DeadLetter::reason)
        .anySatisfy(r -> assertThat(r).startsWith("InvalidTopicException"))
        .anySatisfy(r -> assertThat(r).startsWith("RecordTooLargeException"))
        .hasSize(2);
    assertThat(seen).filteredOn(o -> o.kind() == Kind.DEAD_LETTERED).hasSize(2);
    assertThat(seen).filteredOn(o -> o.kind() == Kind.PUBLISHED).hasSize(50);

    DeadLetter badTopic = dead.stream().filter(d -> d.reason().startsWith("InvalidTopic")).findFirst().orElseThrow();
    Message original = Codec.protobuf().decode(badTopic.rawData()).get(0);
    Message fixed = original.toBuilder().stream(good).build();
    assertThat(outbox.store.redrive(badTopic.batchId(), List.of(fixed)).block()).isTrue();

    Poll.until("the re-driven batch is published", Duration.ofSeconds(30), () -> outbox.rows() == 0
        && seen.stream().filter(o -> o.kind() == Kind.PUBLISHED).count() == 51);
    List<Message> expected = new ArrayList<>(fine);
    expected.add(fixed);
    new Delivery(kafka.consume(List.of(good), 51, Duration.ofSeconds(30), Duration.ofMillis(500)))
        .assertAtLeastOnce(expected);
  }

  @Test
  void threeParallelRelaysDrainOneBacklogWithoutDuplicates() {
    String topicName = topic(3);
    List<Message> written = outbox.write(600, 50, b -> IntStream.range(0, 5)
        .mapToObj(j -> message(topicName, "k" + (b % 20), b * 5 + j, 30)).toList());
    List<List<RelayOutcome>> seen = List.of(new CopyOnWriteArrayList<>(), new CopyOnWriteArrayList<>(),
        new CopyOnWriteArrayList<>());

    for (List<RelayOutcome> s : seen) {
      start(options().kafka(kafka.producerProperties()).claimSize(10).maxInFlight(100).build(), s);
    }

    Poll.until("every outbox row is gone", Duration.ofSeconds(120), () -> outbox.rows() == 0
        && seen.stream().mapToLong(s -> s.stream().filter(o -> o.kind() == Kind.PUBLISHED).count()).sum() == 600);
    System.out.printf("three PARALLEL relays: topic holds %d records%n", kafka.recordCount(topicName));
    Delivery delivery = new Delivery(kafka.consume(List.of(topicName), 3000, Duration.ofSeconds(60),
        Duration.ofSeconds(1)));
    delivery.assertAtLeastOnce(written);
    System.out.printf("three PARALLEL relays: batches per relay %s, duplicates %d%n",
        seen.stream().map(s -> s.stream().filter(o -> o.kind() == Kind.PUBLISHED).count()).toList(),
        delivery.duplicates());
    assertThat(delivery.duplicates()).isZero();
    assertThat(seen.stream().mapToLong(s -> s.stream().filter(o -> o.kind() == Kind.PUBLISHED).count()).sum())
        .isEqualTo(600);
  }

  @Test
  void aRelayThatLostItsLeaseMidSendCannotDeleteTheReclaimedBatch() {
    String topicName = topic(1);
    List<Message> written = outbox.write(1, 1, i -> List.of(message(topicName, "k", 7, 10)));
    List<RelayOutcome> slowSeen = new CopyOnWriteArrayList<>();
    List<RelayOutcome> fastSeen = new CopyOnWriteArrayList<>();
    RecordSink slowSink = TestSinks.slow(KafkaProducerSink.create(kafka.producerProperties(), 10),
        Duration.ofSeconds(3));

    // Without renewal, as for a relay frozen or cut off from the database mid-send. Row leases
    // are PARALLEL's; PartitionedRelayTest covers the same for partition epochs.
    RelayHandle slow = start(options().mode(RelayMode.PARALLEL).sink(slowSink).leaseDuration(Duration.ofSeconds(1))
        .leaseRenewal(Duration.ZERO).build(), slowSeen);
    Poll.until("the slow relay holds the batch", Duration.ofSeconds(10), () -> slow.inFlightRecords() == 1);
    start(options().mode(RelayMode.PARALLEL).kafka(kafka.producerProperties()).build(), fastSeen);

    Poll.until("the slow relay finds its lease lost and the other relay has published", Duration.ofSeconds(20),
        () -> slowSeen.stream().anyMatch(o -> o.kind() == Kind.LEASE_LOST) && !fastSeen.isEmpty());
    assertThat(fastSeen).extracting(RelayOutcome::kind).containsExactly(Kind.PUBLISHED);
    assertThat(outbox.rows()).isZero();
    assertThat(outbox.store.deadLetters(1).collectList().block()).isEmpty();
    Delivery delivery = new Delivery(kafka.consume(List.of(topicName), 2, Duration.ofSeconds(20),
        Duration.ofMillis(500)));
    delivery.assertAtLeastOnce(written);
    assertThat(delivery.duplicates()).as("the slow relay's late send is a duplicate").isEqualTo(1);
    slow.stop(Duration.ofSeconds(5)).block();
    slowSink.close().block();
  }

  @Test
  void aRunningRelayRenewsItsLeaseSoASlowSendIsNotPublishedTwice() {
    String topicName = topic(1);
    List<Message> written = outbox.write(1, 1, i -> List.of(message(topicName, "k", 7, 10)));
    List<RelayOutcome> slowSeen = new CopyOnWriteArrayList<>();
    List<RelayOutcome> otherSeen = new CopyOnWriteArrayList<>();
    RecordSink slowSink = TestSinks.slow(KafkaProducerSink.create(kafka.producerProperties(), 10),
        Duration.ofSeconds(3));

    // A 1 s lease renewed every 333 ms (the default third) outlasts a 3 s send. Row leases are
    // PARALLEL's (PARTITIONED renews partition ownership; PartitionedRelayTest).
    RelayHandle slow = start(options().mode(RelayMode.PARALLEL).sink(slowSink)
        .leaseDuration(Duration.ofSeconds(1)).build(), slowSeen);
    Poll.until("the slow relay holds the batch", Duration.ofSeconds(10),
        () -> slow.inFlightRecords() == 1);
    start(options().mode(RelayMode.PARALLEL).kafka(kafka.producerProperties()).build(), otherSeen);

    Poll.until("the slow relay published", Duration.ofSeconds(20), () -> !slowSeen.isEmpty());
    assertThat(slowSeen).extracting(RelayOutcome::kind).containsExactly(Kind.PUBLISHED);
    assertThat(otherSeen).as("the other relay never got the batch").isEmpty();
    assertThat(outbox.rows()).isZero();
    Delivery delivery = new Delivery(kafka.consume(List.of(topicName), 1, Duration.ofSeconds(20),
        Duration.ofMillis(500)));
    delivery.assertAtLeastOnce(written);
    assertThat(delivery.duplicates()).isZero();
    slow.stop(Duration.ofSeconds(5)).block();
    slowSink.close().block();
  }

  @Test
  void claimedButUnsettledRecordsNeverExceedTheBoundWithAHundredThousandBacklog() {
    String topicName = topic(3);
    outbox.write(10_000, 500, b -> IntStream.range(0, 10)
        .mapToObj(j -> Message.builder().stream(topicName).key("k" + (b % 100)).data(new byte[8]).build())
        .toList());
    TestSinks.Probe probe = new TestSinks.Probe(TestSinks.slow(
        ReactorKafkaSink.create(kafka.producerProperties(), 256), Duration.ofMillis(1)));
    int bound = 500;
    AtomicLong maxInFlight = new AtomicLong();

    RelayHandle relay = start(options().sink(probe).maxInFlight(bound).claimSize(100).build(),
        new CopyOnWriteArrayList<>());
    Disposable sampler = Flux.interval(Duration.ofMillis(2))
        .subscribe(t -> maxInFlight.accumulateAndGet(relay.inFlightRecords(), Math::max));
    try {
      Poll.until("3,000 records are acknowledged", Duration.ofSeconds(60), () -> probe.answered.get() >= 3_000);
    } finally {
      sampler.dispose();
    }
    System.out.printf("backpressure: max claimed-unsettled %d, max sent-unanswered %d, bound %d%n",
        maxInFlight.get(), probe.maxOutstanding.get(), bound);
    assertThat(maxInFlight.get()).isPositive().isLessThanOrEqualTo(bound);
    assertThat(probe.maxOutstanding.get()).isPositive().isLessThanOrEqualTo(bound);
    assertThat(outbox.rows()).isGreaterThan(5_000); // still a backlog: the bound, not the data, limited it
    relay.stop(Duration.ofSeconds(5)).block();
    assertThat(outbox.leasedRows()).isZero();
    assertThat(outbox.ownedPartitions()).as("partitions handed over at stop").isZero();
    probe.close().block();
  }

  @Test
  void stopDuringABusyRunReturnsWithinTheDrainTimeAndLeavesNoLease() {
    String topicName = topic(3);
    outbox.write(3_000, 500, b -> IntStream.range(0, 10)
        .mapToObj(j -> Message.builder().stream(topicName).key("k" + b).data(new byte[16]).build())
        .toList());
    List<RelayOutcome> seen = new CopyOnWriteArrayList<>();
    RelayHandle relay = start(options().kafka(kafka.producerProperties()).maxInFlight(2_000).build(), seen);
    Poll.until("the relay is busy", Duration.ofSeconds(60),
        () -> seen.size() > 50 && relay.inFlightRecords() > 0);

    long started = System.nanoTime();
    relay.stop(Duration.ofSeconds(2)).block(Duration.ofSeconds(10));
    Duration took = Duration.ofNanos(System.nanoTime() - started);

    System.out.printf("stop(2 s) took %d ms%n", took.toMillis());
    assertThat(took).isLessThanOrEqualTo(Duration.ofMillis(2_300));
    assertThat(outbox.leasedRows()).isZero();
    assertThat(outbox.ownedPartitions()).as("partitions handed over at stop").isZero();
    assertThat(outbox.rows()).isPositive();
    assertThat(relay.inFlightRecords()).isZero();
  }
}
