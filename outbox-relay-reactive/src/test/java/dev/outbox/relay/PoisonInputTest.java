package dev.outbox.relay;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.outbox.r2dbc.Codec;
import dev.outbox.r2dbc.DeadLetter;
import dev.outbox.r2dbc.InvalidMessageException;
import dev.outbox.r2dbc.InvalidTableNameException;
import dev.outbox.r2dbc.Ksuid;
import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.relay.RelayOutcome.Kind;
import dev.outbox.testing.Poll;
import dev.outbox.testing.PostgresExtension;
import dev.outbox.testing.TestKafka;
import dev.outbox.testing.TestPostgres;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.stream.IntStream;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.common.errors.RecordTooLargeException;
import org.jspecify.annotations.Nullable;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import reactor.core.publisher.Flux;

/**
 * Poison and bad input, each amid a stream of good messages on real PostgreSQL and Kafka with a
 * relay running: the poison ends as a dead letter with its reason, or as a named exception at
 * write time that writes nothing, and every good message written before and after it arrives.
 */
@ExtendWith(PostgresExtension.class)
class PoisonInputTest {
  /** The two sinks; the Kafka-side poisons run through both. */
  enum Sink { REACTOR_KAFKA, KAFKA_PRODUCER }

  private static final int MB = 1024 * 1024;
  /** Good traffic around each poison: batches of two messages, before and after. */
  private static final int GOOD_BATCHES_BEFORE = 10;
  private static final int GOOD_BATCHES_AFTER = 10;
  private static final int GOOD_BATCHES = GOOD_BATCHES_BEFORE + GOOD_BATCHES_AFTER;

  private final TestKafka kafka = TestKafka.get();
  private final OutboxFixture outbox;
  private final List<RelayOutcome> seen = new CopyOnWriteArrayList<>();
  private @Nullable RelayHandle relay;
  private @Nullable RecordSink ownSink;
  /** WAL mode: the replication slot (and publication) to drop after the test. */
  private @Nullable String walSlot;

  PoisonInputTest(TestPostgres postgres) {
    outbox = new OutboxFixture(postgres, 8);
  }

  @AfterEach
  void tearDown() {
    if (relay != null) {
      relay.stop(Duration.ofSeconds(5)).block(Duration.ofSeconds(10));
    }
    if (ownSink != null) {
      ownSink.close().block(Duration.ofSeconds(40));
    }
    if (walSlot != null) {
      Poll.until("the slot is released", Duration.ofSeconds(15), () -> outbox.postgres.queryLong(
          "SELECT count(*) FROM pg_replication_slots WHERE active AND slot_name = '" + walSlot + "'") == 0);
      outbox.postgres.execute("SELECT pg_drop_replication_slot('" + walSlot + "')",
          "DROP PUBLICATION IF EXISTS " + walSlot);
    }
    outbox.close();
  }

  private String topic(int partitions) {
    String name = TestPostgres.uniqueName("poison");
    kafka.createTopic(name, partitions);
    return name;
  }

  /**
   * Starts a relay polling every 100 ms, retrying quickly. A poison must be dead-lettered at its
   * first attempt (checked on each dead letter), never retried.
   */
  private void startRelay(Sink sink, Map<String, Object> producer) {
    startRelay(sink, producer, RelayMode.PARALLEL);
  }

  private void startRelay(Sink sink, Map<String, Object> producer, RelayMode mode) {
    RelayOptions.Builder options = RelayOptions.builder().table(outbox.table).mode(mode)
        .pollInterval(Duration.ofMillis(100))
        .retryPolicy(RetryPolicy.builder().maxAttempts(10).initialBackoff(Duration.ofMillis(100))
            .maxBackoff(Duration.ofMillis(500)).build());
    if (sink == Sink.REACTOR_KAFKA) {
      options.kafka(producer);
    } else {
      ownSink = KafkaProducerSink.create(producer, 1_000);
      options.sink(ownSink);
    }
    OutboxRelay created = OutboxRelay.create(outbox.pool, options.build());
    created.outcomes().subscribe(seen::add);
    relay = created.start();
    if (mode == RelayMode.WAL) {
      walSlot = outbox.table.name() + "_relay";
      // A walsender: the backend creating the slot also shows it active, before it streams.
      Poll.until("the relay follows the slot", Duration.ofSeconds(15), () -> outbox.postgres.queryLong(
          "SELECT count(*) FROM pg_replication_slots s JOIN pg_stat_activity a ON a.pid = s.active_pid"
              + " WHERE a.backend_type = 'walsender' AND s.slot_name = '" + walSlot + "'") == 1);
    }
  }

  private void startRelay() {
    startRelay(Sink.REACTOR_KAFKA, kafka.producerProperties());
  }

  private static List<Message> goodBatch(String topic, String phase, int batch) {
    return IntStream.range(0, 2).mapToObj(j -> Message.builder().stream(topic)
            .key(phase + "-" + (batch % 4)).header("trace", phase + "-" + batch + "-" + j)
            .data((phase + " " + batch + "/" + j).getBytes(StandardCharsets.UTF_8))
            .time(Instant.parse("2026-01-01T00:00:00Z").plusMillis(batch)).build())
        .toList();
  }

  /**
   * With the relay running: good batches, then {@code poison}, then good batches again, each
   * group right after the other. Returns the good messages.
   */
  private List<Message> aroundPoison(String goodTopic, Runnable poison) {
    List<Message> good = new ArrayList<>(
        outbox.write(GOOD_BATCHES_BEFORE, 5, i -> goodBatch(goodTopic, "before", i)));
    poison.run();
    good.addAll(outbox.write(GOOD_BATCHES_AFTER, 5, i -> goodBatch(goodTopic, "after", i)));
    return good;
  }

  private long count(Kind kind) {
    return seen.stream().filter(o -> o.kind() == kind).count();
  }

  /** Waits until the outbox is empty and exactly these settlements were reported. */
  private void awaitSettled(int published, int deadLettered) {
    try {
      Poll.until(published + " batches published and " + deadLettered + " dead-lettered",
          Duration.ofSeconds(30), () -> outbox.rows() == 0
              && count(Kind.PUBLISHED) == published && count(Kind.DEAD_LETTERED) == deadLettered);
    } catch (AssertionError e) {
      throw new AssertionError(e.getMessage() + "; outbox rows " + outbox.rows() + ", outcomes " + seen, e);
    }
    Poll.until("nothing left in flight", Duration.ofSeconds(5), () -> relay.inFlightRecords() == 0);
  }

  /** Consumes {@code topic} and asserts it holds exactly {@code expected}, once each. */
  private List<ConsumerRecord<String, byte[]>> assertDeliveredExactly(String topic,
      List<Message> expected) {
    List<ConsumerRecord<String, byte[]>> consumed =
        kafka.consume(List.of(topic), expected.size(), Duration.ofSeconds(30), Duration.ofMillis(500));
    Delivery delivery = new Delivery(consumed);
    delivery.assertAtLeastOnce(expected);
    assertThat(delivery.duplicates()).as("duplicates").isZero();
    assertThat(consumed).hasSize(expected.size());
    return consumed;
  }

  private List<DeadLetter> deadLetters() {
    return outbox.store.deadLetters(100).collectList().block(Duration.ofSeconds(10));
  }

  /** The one dead letter, checked to hold exactly {@code poison}. */
  private DeadLetter onlyDeadLetterHolding(Message poison) {
    List<DeadLetter> dead = deadLetters();
    assertThat(dead).hasSize(1);
    DeadLetter letter = dead.get(0);
    assertThat(Codec.protobuf().decode(letter.rawData())).containsExactly(poison);
    assertThat(letter.writeRetries()).as("dead-lettered at the first attempt").isOne();
    assertThat(seen).filteredOn(o -> o.kind() == Kind.DEAD_LETTERED).singleElement()
        .satisfies(o -> {
          assertThat(o.batchId()).isEqualTo(letter.batchId());
          assertThat(o.reason()).isEqualTo(letter.reason());
          assertThat(o.failedAttempts()).isOne();
        });
    return letter;
  }

  // 1. Over the broker's limit, not the producer's.

  @ParameterizedTest
  @EnumSource(Sink.class)
  void aRecordTheBrokerRejectsAsTooLargeIsDeadLetteredWhileItsPartitionKeepsFlowing(Sink sink) {
    String topic = topic(1); // one partition: the poison sits between good records of the same partition
    Map<String, Object> producer = new HashMap<>(kafka.producerProperties());
    producer.put("max.request.size", 20 * MB); // the producer lets it through; the broker's
    startRelay(sink, producer);                  // message.max.bytes (1 MB by default) does not
    Message poison = Message.builder().stream(topic).key("before-1").data(new byte[2 * MB]).build();

    List<Message> good = aroundPoison(topic, () -> outbox.write(1, 1, i -> List.of(poison)));

    awaitSettled(GOOD_BATCHES, 1);
    DeadLetter dead = onlyDeadLetterHolding(poison);
    System.out.printf("broker-side too large (%s): %s%n", sink, dead.reason());
    assertThat(dead.reason()).startsWith("RecordTooLargeException: ")
        .as("rejected by the broker, not by the producer's own max.request.size check")
        .doesNotContain("max.request.size");
    assertDeliveredExactly(topic, good);
  }

  @ParameterizedTest
  @EnumSource(Sink.class)
  void aRecordTheBrokerRejectsAsTooLargeIsDeadLetteredInWalModeAndLaterCommitsFollow(Sink sink) {
    String topic = topic(1);
    Map<String, Object> producer = new HashMap<>(kafka.producerProperties());
    producer.put("max.request.size", 20 * MB);
    startRelay(sink, producer, RelayMode.WAL);
    Message poison = Message.builder().stream(topic).key("before-1").data(new byte[2 * MB]).build();

    List<Message> good = aroundPoison(topic, () -> outbox.write(1, 1, i -> List.of(poison)));

    awaitSettled(GOOD_BATCHES, 1);
    DeadLetter dead = onlyDeadLetterHolding(poison);
    System.out.printf("broker-side too large, WAL mode (%s): %s%n", sink, dead.reason());
    assertThat(dead.reason()).startsWith("RecordTooLargeException: ").doesNotContain("max.request.size");
    assertDeliveredExactly(topic, good);
  }

  @ParameterizedTest
  @EnumSource(Sink.class)
  void aBoundedSendWithABrokerRejectedRecordAnswersEveryRecordAndCompletes(Sink kind) {
    String topic = topic(1);
    Map<String, Object> producer = new HashMap<>(kafka.producerProperties());
    producer.put("max.request.size", 20 * MB);
    ownSink = kind == Sink.REACTOR_KAFKA
        ? ReactorKafkaSink.create(producer, 16) : KafkaProducerSink.create(producer, 16);
    List<OutboundRecord<Integer>> records = IntStream.range(0, 3)
        .mapToObj(i -> new OutboundRecord<>(topic, "k", new byte[i == 1 ? 2 * MB : 10],
            Instant.now(), Map.of(), i))
        .toList();

    // WAL mode sends one batch at a time like this and settles it when the Flux completes.
    List<SendResult<Integer>> results = ownSink.send(Flux.fromIterable(records)).collectList()
        .block(Duration.ofSeconds(30));

    assertThat(results).extracting(SendResult::correlation).containsExactlyInAnyOrder(0, 1, 2);
    assertThat(results).filteredOn(r -> r.error() != null).singleElement().satisfies(r -> {
      assertThat(r.correlation()).isEqualTo(1);
      assertThat(r.error()).isInstanceOf(RecordTooLargeException.class);
    });
  }

  // 2. A stream name that is no legal topic.

  @ParameterizedTest
  @EnumSource(Sink.class)
  void aStreamThatIsNoLegalTopicIsDeadLetteredWhileOthersFlow(Sink sink) {
    String topic = topic(2);
    startRelay(sink, kafka.producerProperties());
    Message poison = Message.builder().stream("bad topic!").key("k").data(new byte[] {1}).build();

    List<Message> good = aroundPoison(topic, () -> outbox.write(1, 1, i -> List.of(poison)));

    awaitSettled(GOOD_BATCHES, 1);
    DeadLetter dead = onlyDeadLetterHolding(poison);
    System.out.printf("illegal topic (%s): %s%n", sink, dead.reason());
    assertThat(dead.reason()).startsWith("InvalidTopicException: ").contains("bad topic!");
    assertDeliveredExactly(topic, good);
  }

  // 3. raw_data that is not a batch, inserted by hand.

  @Test
  void corruptRawDataInsertedByHandIsDeadLetteredAsUndecodableWhileOthersFlow() {
    String topic = topic(2);
    byte[] valid = Codec.protobuf().encode(goodBatch(topic, "truncated", 0));
    byte[] garbage = new byte[64];
    Arrays.fill(garbage, (byte) 0xFF);
    Map<String, byte[]> corrupt = new LinkedHashMap<>();
    corrupt.put("not a protobuf", garbage);
    corrupt.put("no messages", new byte[0]);
    // Cut inside the second message.
    corrupt.put("truncated", Arrays.copyOf(valid, valid.length - 5));
    // Cut between the messages: a valid shorter batch, caught by the row's message_count.
    corrupt.put("cut at a message boundary",
        Codec.protobuf().encode(goodBatch(topic, "truncated", 0).subList(0, 1)));
    // TransportMessageBatch{messages: [TransportMessage{messageId: "x"}]}: well-formed, no time.
    corrupt.put("no time", new byte[] {0x0A, 0x03, 0x0A, 0x01, 'x'});
    Map<String, String> ids = new LinkedHashMap<>();
    startRelay();

    List<Message> good = aroundPoison(topic, () -> corrupt.forEach((what, raw) -> {
      String id = Ksuid.generate().toString();
      ids.put(what, id);
      outbox.postgres.execute("INSERT INTO " + outbox.table.qualifiedName()
          + " (batch_id, message_count, raw_data) VALUES ('" + id + "', 2, '\\x"
          + HexFormat.of().formatHex(raw) + "')");
    }));

    awaitSettled(GOOD_BATCHES, corrupt.size());
    Map<String, String> reasons = new LinkedHashMap<>();
    ids.forEach((what, id) -> {
      DeadLetter dead = outbox.store.findDeadLetter(id).block(Duration.ofSeconds(10));
      assertThat(dead).as("dead letter for %s", what).isNotNull();
      assertThat(dead.rawData()).as("kept as it was").isEqualTo(corrupt.get(what));
      assertThat(dead.messageCount()).isEqualTo(2);
      assertThat(dead.writeRetries()).as("dead-lettered at the first attempt").isOne();
      reasons.put(what, dead.reason());
    });
    System.out.printf("undecodable: %s%n", reasons);
    String prefix = "undecodable raw_data: UndecodableBatchException: ";
    assertThat(reasons.get("not a protobuf"))
        .startsWith(prefix + "raw_data is not a protobuf streams.TransportMessageBatch: ");
    assertThat(reasons.get("truncated"))
        .startsWith(prefix + "raw_data is not a protobuf streams.TransportMessageBatch: ");
    assertThat(reasons.get("no messages"))
        .isEqualTo(prefix + "raw_data decodes to a batch with no messages (0 bytes)");
    assertThat(reasons.get("no time")).isEqualTo(prefix + "message 0 of the batch has no time");
    assertThat(reasons.get("cut at a message boundary"))
        .isEqualTo(prefix + "raw_data holds 1 messages but the row's message_count is 2");
    assertDeliveredExactly(topic, good);
  }

  // 4. One write of 10 MB: 100 messages of 100 KB, each under the broker's limit.

  @Test
  void aTenMegabyteBatchIsPublishedWhole() {
    String topic = topic(3);
    List<Message> big = IntStream.range(0, 100).mapToObj(i -> {
      byte[] data = new byte[100 * 1024];
      Arrays.fill(data, (byte) i);
      return Message.builder().stream(topic).key("big").header("part", "" + i)
          .data(data).time(Instant.parse("2026-01-01T00:00:00Z").plusMillis(i)).build();
    }).toList();
    int encoded = Codec.protobuf().encode(big).length;
    assertThat(encoded).isGreaterThan(10 * 1_000_000);
    startRelay();
    long started = System.nanoTime();

    List<Message> good = aroundPoison(topic, () -> outbox.write(1, 1, i -> big));

    awaitSettled(GOOD_BATCHES + 1, 0);
    System.out.printf("10 MB batch (%d bytes encoded): written and published in %d ms%n", encoded,
        Duration.ofNanos(System.nanoTime() - started).toMillis());
    assertThat(seen).filteredOn(o -> o.kind() == Kind.PUBLISHED && o.messageCount() == 100).hasSize(1);
    assertThat(deadLetters()).isEmpty();
    List<Message> all = new ArrayList<>(good);
    all.addAll(big);
    Delivery.assertSameContent(assertDeliveredExactly(topic, all), all);
  }

  // 5. A table name with SQL in it.

  @Test
  void aTableNameWithSqlInItIsRefusedBeforeAnySqlRuns() {
    String topic = topic(1);
    String victim = TestPostgres.uniqueName("victim");
    outbox.postgres.execute("CREATE TABLE " + victim + " (id INT)");
    String relations = "SELECT count(*) FROM pg_class";
    long before = outbox.postgres.queryLong(relations);
    List<String> names = List.of("outbox; drop table " + victim,
        "outbox; drop table " + victim + "; --",
        "\"outbox\"; drop table " + victim,
        "outbox'); drop table " + victim + "; --",
        victim + " cascade",
        "public.outbox; drop table " + victim,
        "public.outbox.extra",
        "outbox -- comment",
        "1outbox",
        "",
        " ",
        "out box",
        "ｏｕｔｂｏｘ",
        "outbox\u0000",
        "x".repeat(47));
    Map<String, String> messages = new LinkedHashMap<>();
    startRelay();

    List<Message> good = aroundPoison(topic, () -> names.forEach(name ->
        assertThatThrownBy(() -> OutboxTable.of(name)).as("table name '%s'", name)
            .isInstanceOf(InvalidTableNameException.class)
            .hasMessageContaining("is invalid")
            .satisfies(e -> messages.put(name, e.getMessage()))));

    System.out.printf("table name: %s%n", messages.get(names.get(0)));
    assertThat(messages).hasSize(names.size());
    assertThat(outbox.postgres.queryLong("SELECT count(*) FROM pg_class WHERE oid = to_regclass('"
        + victim + "')")).as("the table the names try to drop").isOne();
    assertThat(outbox.postgres.queryLong(relations)).as("relations, nothing created").isEqualTo(before);
    awaitSettled(GOOD_BATCHES, 0);
    assertDeliveredExactly(topic, good);
    outbox.postgres.execute("DROP TABLE " + victim);
  }

  // 6. Null and oversized header values.

  @Test
  void nullHeaderNamesAndValuesAreRefusedByNameAndWriteNothing() {
    String topic = topic(1);
    Message fine = Message.builder().stream(topic).data(new byte[] {1}).build();
    Map<String, String> nullValue = new HashMap<>();
    nullValue.put("trace", null);
    startRelay();

    List<Message> good = aroundPoison(topic, () -> {
      assertThatThrownBy(() -> Message.builder().stream(topic).header("trace", null).data(new byte[1]).build())
          .isInstanceOf(InvalidMessageException.class)
          .hasMessage("Message headers: the value of header 'trace' is null");
      assertThatThrownBy(() -> Message.builder().stream(topic).header(null, "v").data(new byte[1]).build())
          .isInstanceOf(InvalidMessageException.class)
          .hasMessage("Message headers: a header name is null");
      assertThatThrownBy(() -> Message.builder().stream(topic).headers(nullValue).data(new byte[1]).build())
          .isInstanceOf(InvalidMessageException.class)
          .hasMessage("Message headers: the value of header 'trace' is null");
      assertThatThrownBy(() -> fine.toBuilder().header("trace", null).build())
          .isInstanceOf(InvalidMessageException.class);
      // A batch holding an invalid element is refused by the writer before any SQL.
      assertThatThrownBy(() -> outbox.write(1, 1, i -> Arrays.asList(fine, null)))
          .isInstanceOf(InvalidMessageException.class)
          .hasMessage("Message 1 of the batch is null");
    });

    // Nothing was written: exactly the good batches were published, nothing else is left.
    awaitSettled(GOOD_BATCHES, 0);
    assertThat(deadLetters()).isEmpty();
    assertDeliveredExactly(topic, good);
  }

  @ParameterizedTest
  @EnumSource(Sink.class)
  void anOversizedHeaderValueIsDeadLetteredAsTooLargeWhileOthersFlow(Sink sink) {
    String topic = topic(1);
    startRelay(sink, kafka.producerProperties());
    Message poison = Message.builder().stream(topic).key("before-1").header("trace", "h".repeat(2 * MB))
        .data(new byte[] {1}).build();

    List<Message> good = aroundPoison(topic, () -> outbox.write(1, 1, i -> List.of(poison)));

    awaitSettled(GOOD_BATCHES, 1);
    DeadLetter dead = onlyDeadLetterHolding(poison);
    System.out.printf("oversized header (%s): %s%n", sink, dead.reason());
    assertThat(dead.reason()).startsWith("RecordTooLargeException: ").contains("max.request.size");
    assertDeliveredExactly(topic, good);
  }
}
