package dev.outbox.relay;

import static org.assertj.core.api.Assertions.assertThat;

import dev.outbox.testing.TestKafka;
import dev.outbox.testing.TestPostgres;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.common.errors.InvalidTopicException;
import org.apache.kafka.common.errors.RecordTooLargeException;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import reactor.core.publisher.Flux;
import reactor.test.StepVerifier;

/** The {@link RecordSink} contract, run against every implementation on a real broker. */
abstract class RecordSinkContract {
  static final int MAX_IN_FLIGHT = 16;
  final TestKafka kafka = TestKafka.get();
  private RecordSink sink;

  abstract RecordSink create(Map<String, Object> producerProperties, int maxInFlight);

  /** Records the implementation may buffer beyond its in-flight limit (documented per sink). */
  abstract int bufferedAhead();

  RecordSink sink() {
    if (sink == null) {
      sink = create(kafka.producerProperties(), MAX_IN_FLIGHT);
    }
    return sink;
  }

  @AfterEach
  void closeSink() {
    if (sink != null) {
      sink.close().block(Duration.ofSeconds(30));
    }
  }

  static OutboundRecord<Integer> record(String topic, String key, int i, int size) {
    byte[] value = new byte[size];
    value[0] = (byte) i;
    return new OutboundRecord<>(topic, key, value, Instant.ofEpochMilli(1_700_000_000_000L + i),
        Map.of("n", Integer.toString(i)), i);
  }

  String topic(int partitions) {
    String name = TestPostgres.uniqueName("sink");
    kafka.createTopic(name, partitions);
    return name;
  }

  @Test
  void emitsOneResultPerRecordAndFailedRecordsDoNotEndTheFlux() {
    String topic = topic(1);
    Flux<OutboundRecord<Integer>> records = Flux.range(0, 30).map(i -> switch (i) {
      case 10 -> record("not a legal topic!", "k", i, 10);
      case 20 -> record(topic, "k", i, 2_000_000);
      default -> record(topic, "k", i, 10);
    });

    List<SendResult<Integer>> results = sink().send(records).collectList().block(Duration.ofSeconds(60));

    assertThat(results).hasSize(30);
    assertThat(results).filteredOn(SendResult::acknowledged).hasSize(28);
    assertThat(results).filteredOn(r -> r.correlation() == 10).singleElement()
        .satisfies(r -> assertThat(r.error()).isInstanceOf(InvalidTopicException.class));
    assertThat(results).filteredOn(r -> r.correlation() == 20).singleElement()
        .satisfies(r -> assertThat(r.error()).isInstanceOf(RecordTooLargeException.class));
  }

  /** A stored batch's guard, as the relay's record correlation carries one. */
  static final class Batch implements SendGuard {
    final String name;
    private volatile boolean failed;

    Batch(String name) {
      this.name = name;
    }

    @Override
    public boolean sendAbandoned() {
      return failed;
    }

    @Override
    public void sendFailed() {
      failed = true;
    }
  }

  /**
   * A batch's first record fails in the producer (its topic does not exist: metadata times out
   * after max.block.ms); its later records must not be sent, or they would be in Kafka ahead of
   * the first when the batch is retried. Another batch's record is unaffected.
   */
  @Test
  void afterARecordOfABatchFailsItsLaterRecordsAreNotSent() {
    String topic = topic(1);
    Map<String, Object> props = new java.util.HashMap<>(kafka.producerProperties());
    props.put("max.block.ms", 1_000);
    RecordSink guarded = create(props, MAX_IN_FLIGHT);
    assertThat(guarded.checksSendGuard()).as("it says so: the relay relies on it").isTrue();
    Batch failing = new Batch("failing");
    Batch other = new Batch("other");
    List<OutboundRecord<Batch>> records = List.of(
        new OutboundRecord<>(TestPostgres.uniqueName("absent"), "k", new byte[] {0}, Instant.now(), Map.of(), failing),
        new OutboundRecord<>(topic, "k", new byte[] {1}, Instant.now(), Map.of(), failing),
        new OutboundRecord<>(topic, "k", new byte[] {2}, Instant.now(), Map.of(), failing),
        new OutboundRecord<>(topic, "k", new byte[] {3}, Instant.now(), Map.of(), other));
    try {
      List<SendResult<Batch>> results = guarded.send(Flux.fromIterable(records)).collectList()
          .block(Duration.ofSeconds(60));

      assertThat(results).hasSize(4);
      assertThat(results).filteredOn(r -> r.correlation() == failing)
          .extracting(r -> r.error() == null ? "acknowledged" : r.error().getClass().getSimpleName())
          .containsExactlyInAnyOrder("TimeoutException", "EarlierRecordFailedException",
              "EarlierRecordFailedException");
      assertThat(results).filteredOn(r -> r.correlation() == other).singleElement()
          .satisfies(r -> assertThat(r.error()).isNull());
      List<ConsumerRecord<String, byte[]>> consumed =
          kafka.consume(List.of(topic), 1, Duration.ofSeconds(30), Duration.ofSeconds(2));
      assertThat(consumed).extracting(r -> r.value()[0]).containsExactly((byte) 3);
    } finally {
      guarded.close().block(Duration.ofSeconds(30));
    }
  }

  @Test
  void recordsArriveWithKeyValueTimestampAndHeadersInOrderPerKey() {
    String topic = topic(3);
    Flux<OutboundRecord<Integer>> records = Flux.range(0, 600)
        .map(i -> record(topic, i % 3 == 0 ? null : "key-" + (i % 3), i, 10));

    StepVerifier.create(sink().send(records).filter(SendResult::acknowledged).count())
        .expectNext(600L).verifyComplete();

    List<ConsumerRecord<String, byte[]>> consumed =
        kafka.consume(List.of(topic), 600, Duration.ofSeconds(30), Duration.ofMillis(200));
    assertThat(consumed).hasSize(600);
    for (String key : List.of("key-1", "key-2")) {
      List<Integer> order = consumed.stream().filter(r -> key.equals(r.key()))
          .map(r -> Integer.parseInt(new String(r.headers().lastHeader("n").value(), StandardCharsets.UTF_8)))
          .toList();
      assertThat(order).hasSize(200).isSorted();
    }
    ConsumerRecord<String, byte[]> first = consumed.stream()
        .filter(r -> "0".equals(new String(r.headers().lastHeader("n").value(), StandardCharsets.UTF_8)))
        .findFirst().orElseThrow();
    assertThat(first.key()).isNull();
    assertThat(first.timestamp()).isEqualTo(1_700_000_000_000L);
    assertThat(first.value()).hasSize(10);
  }

  @Test
  void requestsNoMoreThanItsInFlightLimitAhead() {
    String topic = topic(1);
    AtomicLong emitted = new AtomicLong();
    AtomicLong answered = new AtomicLong();
    AtomicLong maxAhead = new AtomicLong();
    Flux<OutboundRecord<Integer>> records = Flux.range(0, 2_000)
        .doOnNext(i -> maxAhead.accumulateAndGet(emitted.incrementAndGet() - answered.get(), Math::max))
        .map(i -> record(topic, "k", i, 100));

    StepVerifier.create(sink().send(records).doOnNext(r -> answered.incrementAndGet()).count())
        .expectNext(2_000L).verifyComplete();

    assertThat(maxAhead.get()).isPositive().isLessThanOrEqualTo(MAX_IN_FLIGHT + bufferedAhead() + 1);
  }

  @Test
  void completesAfterAnEmptyUpstreamAndCanSendAgain() {
    String topic = topic(1);
    StepVerifier.create(sink().send(Flux.<OutboundRecord<Integer>>empty())).verifyComplete();
    StepVerifier.create(sink().send(Flux.just(record(topic, "k", 1, 1))))
        .assertNext(r -> assertThat(r.acknowledged()).isTrue()).verifyComplete();
    StepVerifier.create(sink().send(Flux.just(record(topic, "k", 2, 1))))
        .assertNext(r -> assertThat(r.correlation()).isEqualTo(2)).verifyComplete();
  }
}
