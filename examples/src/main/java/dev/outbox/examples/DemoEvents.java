package dev.outbox.examples;

import dev.outbox.testing.TestKafka;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.StringDeserializer;

/**
 * The demos' consumer side: reads the topic on its own thread, counts events per order (the
 * record key), measures commit → consume latency, and prints the summary.
 */
public final class DemoEvents implements AutoCloseable {
  private final Map<String, Long> committedAt = new ConcurrentHashMap<>();
  private final Map<String, Integer> seen = new ConcurrentHashMap<>();
  private final List<Long> latenciesMicros = Collections.synchronizedList(new ArrayList<>());
  private final AtomicBoolean running = new AtomicBoolean(true);
  private final AtomicLong records = new AtomicLong();
  private final long started = System.nanoTime();
  private final Thread consumer;

  public DemoEvents(TestKafka kafka, String topic) {
    consumer = new Thread(() -> consume(kafka, topic), "demo-consumer");
    consumer.start();
  }

  /** Call when the transaction of {@code orderId} has committed. */
  public void committed(String orderId) {
    committedAt.put(orderId, System.nanoTime());
  }

  public int consumed() {
    return seen.size();
  }

  /** Waits until {@code orders} distinct events arrived or {@code deadline} passed. */
  public void awaitAll(int orders, Duration deadline) {
    long end = System.nanoTime() + deadline.toNanos();
    while (seen.size() < orders && System.nanoTime() < end) {
      LockSupport.parkNanos(Duration.ofMillis(50).toNanos());
    }
    // A short grace period to notice duplicates.
    LockSupport.parkNanos(Duration.ofMillis(500).toNanos());
  }

  /** Prints the summary; returns the number of missing events. */
  public long printSummary(int orders, long published) {
    List<Long> sorted = new ArrayList<>(latenciesMicros);
    Collections.sort(sorted);
    long missing = orders - seen.size();
    System.out.println();
    System.out.println("Summary");
    System.out.printf("  orders placed        %d%n", orders);
    System.out.printf("  events published     %d%n", published);
    System.out.printf("  events consumed      %d (records %d)%n", seen.size(), records.get());
    System.out.printf("  duplicates           %d%n", records.get() - seen.size());
    System.out.printf("  missing              %d%n", missing);
    System.out.printf("  elapsed              %.1f s%n", (System.nanoTime() - started) / 1e9);
    System.out.printf("  commit -> consume    p50 %.1f ms, p99 %.1f ms%n",
        percentile(sorted, 0.50) / 1000.0, percentile(sorted, 0.99) / 1000.0);
    return missing;
  }

  @Override
  public void close() throws InterruptedException {
    running.set(false);
    consumer.join();
  }

  private void consume(TestKafka kafka, String topic) {
    Map<String, Object> props = Map.of(
        ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, kafka.bootstrapServers(),
        ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class,
        ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class,
        ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false,
        ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
    try (KafkaConsumer<String, byte[]> kafkaConsumer = new KafkaConsumer<>(props)) {
      List<TopicPartition> partitions = kafkaConsumer.partitionsFor(topic, Duration.ofSeconds(30))
          .stream().map(p -> new TopicPartition(p.topic(), p.partition())).toList();
      kafkaConsumer.assign(partitions);
      kafkaConsumer.seekToBeginning(partitions);
      while (running.get()) {
        for (ConsumerRecord<String, byte[]> r : kafkaConsumer.poll(Duration.ofMillis(50))) {
          long now = System.nanoTime();
          records.incrementAndGet();
          if (seen.merge(r.key(), 1, Integer::sum) == 1) {
            Long committed = committedAt.get(r.key());
            if (committed != null) {
              latenciesMicros.add((now - committed) / 1_000);
            }
          }
        }
      }
    }
  }

  private static double percentile(List<Long> sorted, double p) {
    if (sorted.isEmpty()) {
      return Double.NaN;
    }
    return sorted.get(Math.min(sorted.size() - 1, (int) Math.ceil(p * sorted.size()) - 1));
  }
}
