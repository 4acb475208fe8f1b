package dev.outbox.examples;

import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.OutboxSchema;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.r2dbc.OutboxTransactions;
import dev.outbox.r2dbc.OutboxWriter;
import dev.outbox.relay.OutboxRelay;
import dev.outbox.relay.RelayHandle;
import dev.outbox.relay.RelayOptions;
import dev.outbox.relay.RelayOutcome;
import dev.outbox.testing.TestKafka;
import dev.outbox.testing.TestPostgres;
import io.r2dbc.pool.ConnectionPool;
import io.r2dbc.spi.Connection;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.StringDeserializer;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/**
 * The whole flow in one plain Reactor program: each order is inserted together with its
 * "OrderPlaced" message in one R2DBC transaction; the relay publishes the messages to Kafka; a
 * consumer checks that every event arrived. Runs on embedded PostgreSQL and Kafka unless {@code
 * OUTBOX_TEST_POSTGRES_URL} / {@code OUTBOX_TEST_KAFKA_BOOTSTRAP} name external ones.
 */
public final class PlainReactorDemo {
  private static final String TOPIC = "orders";

  private PlainReactorDemo() {}

  public static void main(String[] args) throws Exception {
    int orders = Integer.getInteger("demo.orders", 2000);
    long started = System.nanoTime();
    System.out.println("Starting PostgreSQL and Kafka ...");
    TestPostgres postgres = TestPostgres.get();
    TestKafka kafka = TestKafka.get();
    kafka.createTopic(TOPIC, 3);
    ConnectionPool pool = postgres.newPool(16);
    OutboxTable table = OutboxTable.of("demo_outbox");
    postgres.execute("DROP TABLE IF EXISTS demo_orders", "DROP TABLE IF EXISTS demo_outbox",
        "DROP TABLE IF EXISTS demo_outbox_dead_letter",
        "CREATE TABLE demo_orders (id TEXT PRIMARY KEY, customer TEXT NOT NULL, total_cents BIGINT NOT NULL)");
    OutboxSchema.createIfMissing(pool, table).block();

    // 1. The relay, embedded in this process.
    OutboxRelay outboxRelay = OutboxRelay.create(pool, RelayOptions.builder()
        .table(table)
        .kafka(kafka.producerProperties())
        .pollInterval(Duration.ofMillis(100))
        .build());
    AtomicLong published = new AtomicLong();
    outboxRelay.outcomes()
        .filter(outcome -> outcome.kind() == RelayOutcome.Kind.PUBLISHED)
        .subscribe(outcome -> published.addAndGet(outcome.messageCount()));
    RelayHandle relay = outboxRelay.start();

    // 2. A consumer that counts events and measures commit -> consume latency.
    Map<String, Long> committedAt = new ConcurrentHashMap<>();
    Map<String, Integer> seen = new ConcurrentHashMap<>();
    List<Long> latenciesMicros = Collections.synchronizedList(new ArrayList<>());
    AtomicBoolean consuming = new AtomicBoolean(true);
    AtomicLong records = new AtomicLong();
    Thread consumer = new Thread(() -> consume(kafka, committedAt, seen, latenciesMicros, records, consuming),
        "demo-consumer");
    consumer.start();

    // 3. Place the orders: business row + outbox message, one transaction each.
    OutboxWriter writer = OutboxWriter.builder().table(table).build();
    AtomicInteger placed = new AtomicInteger();
    System.out.printf("Placing %d orders ...%n", orders);
    Flux.range(1, orders)
        .flatMap(i -> placeOrder(pool, writer, "order-" + i, "customer-" + (i % 97), 1_000L + i)
            .doOnSuccess(orderId -> {
              committedAt.put(orderId, System.nanoTime());
              int n = placed.incrementAndGet();
              if (n % Math.max(1, orders / 10) == 0) {
                System.out.printf("  placed %d/%d, consumed %d%n", n, orders, seen.size());
              }
            }), 16)
        .blockLast();

    // 4. Wait until every event arrived (or give up after two minutes).
    long deadline = System.nanoTime() + Duration.ofMinutes(2).toNanos();
    while (seen.size() < orders && System.nanoTime() < deadline) {
      Thread.sleep(50);
    }
    Thread.sleep(500); // a short grace period to notice duplicates
    consuming.set(false);
    consumer.join();
    relay.stop(Duration.ofSeconds(5)).block();
    pool.dispose();

    List<Long> sorted = new ArrayList<>(latenciesMicros);
    Collections.sort(sorted);
    long missing = orders - seen.size();
    System.out.println();
    System.out.println("Summary");
    System.out.printf("  orders placed        %d%n", orders);
    System.out.printf("  events published     %d%n", published.get());
    System.out.printf("  events consumed      %d (records %d)%n", seen.size(), records.get());
    System.out.printf("  duplicates           %d%n", records.get() - seen.size());
    System.out.printf("  missing              %d%n", missing);
    System.out.printf("  elapsed              %.1f s%n", (System.nanoTime() - started) / 1e9);
    System.out.printf("  commit -> consume    p50 %.1f ms, p99 %.1f ms%n",
        percentile(sorted, 0.50) / 1000.0, percentile(sorted, 0.99) / 1000.0);
    kafka.close();
    System.exit(missing == 0 ? 0 : 1);
  }

  /** The business transaction: insert the order and write its event, atomically. */
  static Mono<String> placeOrder(ConnectionPool pool, OutboxWriter writer, String orderId,
      String customer, long totalCents) {
    Message orderPlaced = Message.builder()
        .stream(TOPIC)
        .key(orderId)
        .header("type", "OrderPlaced")
        .contentType("application/json")
        .data(("{\"orderId\":\"" + orderId + "\",\"customer\":\"" + customer
            + "\",\"totalCents\":" + totalCents + "}").getBytes(StandardCharsets.UTF_8))
        .build();
    return OutboxTransactions.inTransaction(pool, connection ->
        insertOrder(connection, orderId, customer, totalCents)
            .then(writer.write(orderPlaced))
            .thenReturn(orderId));
  }

  private static Mono<Void> insertOrder(Connection connection, String id, String customer, long total) {
    return Flux.from(connection
            .createStatement("INSERT INTO demo_orders (id, customer, total_cents) VALUES ($1, $2, $3)")
            .bind(0, id).bind(1, customer).bind(2, total)
            .execute())
        .concatMap(result -> result.getRowsUpdated())
        .then();
  }

  private static void consume(TestKafka kafka, Map<String, Long> committedAt, Map<String, Integer> seen,
      List<Long> latenciesMicros, AtomicLong records, AtomicBoolean running) {
    Map<String, Object> props = Map.of(
        ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, kafka.bootstrapServers(),
        ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class,
        ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class,
        ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
    try (KafkaConsumer<String, byte[]> consumer = new KafkaConsumer<>(props)) {
      List<TopicPartition> partitions = consumer.partitionsFor(TOPIC, Duration.ofSeconds(30)).stream()
          .map(p -> new TopicPartition(p.topic(), p.partition())).toList();
      consumer.assign(partitions);
      consumer.seekToBeginning(partitions);
      while (running.get()) {
        for (ConsumerRecord<String, byte[]> r : consumer.poll(Duration.ofMillis(50))) {
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
