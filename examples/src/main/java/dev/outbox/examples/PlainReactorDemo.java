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
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
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
    DemoEvents events = new DemoEvents(kafka, TOPIC);

    // 3. Place the orders: business row + outbox message, one transaction each.
    OutboxWriter writer = OutboxWriter.builder().table(table).build();
    AtomicInteger placed = new AtomicInteger();
    System.out.printf("Placing %d orders ...%n", orders);
    Flux.range(1, orders)
        .flatMap(i -> placeOrder(pool, writer, "order-" + i, "customer-" + (i % 97), 1_000L + i)
            .doOnSuccess(orderId -> {
              events.committed(orderId);
              int n = placed.incrementAndGet();
              if (n % Math.max(1, orders / 10) == 0) {
                System.out.printf("  placed %d/%d, consumed %d%n", n, orders, events.consumed());
              }
            }), 16)
        .blockLast();

    // 4. Wait until every event arrived (or give up after two minutes).
    events.awaitAll(orders, Duration.ofMinutes(2));
    events.close();
    relay.stop(Duration.ofSeconds(5)).block();
    pool.dispose();
    long missing = events.printSummary(orders, published.get());
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

}
