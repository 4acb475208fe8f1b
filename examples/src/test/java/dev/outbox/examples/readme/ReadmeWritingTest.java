package dev.outbox.examples.readme;

import static org.assertj.core.api.Assertions.assertThat;

import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.OutboxContext;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.r2dbc.OutboxTransactions;
import dev.outbox.r2dbc.OutboxWriter;
import io.r2dbc.pool.ConnectionPool;
import io.r2dbc.spi.Connection;
import java.time.Duration;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.function.Function;
import org.junit.jupiter.api.Test;
import reactor.core.Disposable;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import reactor.test.StepVerifier;

/** README "Writing messages": both snippets, run against PostgreSQL. */
class ReadmeWritingTest {
  private final ReadmeServers servers = ReadmeServers.get();

  /** The README code, with what it leaves to the reader ({@code pool}, {@code insertOrder}). */
  static final class Writing {
    private final ConnectionPool pool;
    /** What {@code insertOrder} does after its insert: the tests' way to fail or hang. */
    Function<Order, Mono<Void>> afterInsert = order -> Mono.empty();

    Writing(ConnectionPool pool) {
      this.pool = pool;
    }

    Mono<Void> insertOrder(Connection connection, Order order) {
      return Flux.from(connection.createStatement("INSERT INTO orders (id) VALUES ($1)")
              .bind("$1", order.id()).execute())
          .concatMap(result -> result.getRowsUpdated())
          .then(Mono.defer(() -> afterInsert.apply(order)));
    }

    // tag::writing[]
    OutboxWriter writer = OutboxWriter.builder()
        .table(OutboxTable.of("order_outbox"))                // default: streams_egress
        .build();

    Mono<Void> placeOrder(Order order) {
      Message placed = Message.builder()
          .stream("orders")                                   // the Kafka topic
          .key(order.id())                                    // partition key (optional)
          .header("type", "OrderPlaced")
          .contentType("application/json")                    // else text/plain for a String
          .data(order.toJson())                               // String (UTF-8) or byte[]
          .build();                                           // id = new KSUID, time = now
      return OutboxTransactions.inTransaction(pool, connection ->
          insertOrder(connection, order).then(writer.write(placed)));
    }
    // end::writing[]

    // tag::manual-tx[]
    Mono<Void> placeOrderManually(Order order, Message placed) {
      return Mono.usingWhen(pool.create(),
          connection -> Mono.from(connection.beginTransaction())
              .then(insertOrder(connection, order))
              .then(writer.write(placed))
              .then(Mono.from(connection.commitTransaction()))
              .contextWrite(OutboxContext.withConnection(connection)),
          Connection::close,                                  // committed: back to the pool
          (connection, error) -> Flux.concatDelayError(       // failed: roll back, then close
              connection.rollbackTransaction(), connection.close()),
          connection -> Flux.concatDelayError(                // cancelled: the same
              connection.rollbackTransaction(), connection.close()));
    }
    // end::manual-tx[]
  }

  private static Order newOrder() {
    return new Order(UUID.randomUUID().toString(), "alice");
  }

  private static Message placedEvent(Order order) {
    return Message.builder().stream("orders").key(order.id()).data(order.toJson()).build();
  }

  private long ordersWithId(Order order) {
    return servers.count("SELECT count(*) FROM {schema}.orders WHERE id = '" + order.id() + "'");
  }

  private long outboxRows() {
    return servers.count("SELECT count(*) FROM {schema}.order_outbox");
  }

  @Test
  void placeOrderCommitsTheOrderAndItsMessage() {
    ConnectionPool pool = servers.newPool(2);
    try {
      Writing writing = new Writing(pool);
      Order order = newOrder();
      long before = outboxRows();
      StepVerifier.create(writing.placeOrder(order)).verifyComplete();
      assertThat(ordersWithId(order)).isEqualTo(1);
      assertThat(outboxRows()).isEqualTo(before + 1);
    } finally {
      pool.dispose();
    }
  }

  @Test
  void theManualTransactionReturnsItsConnectionAfterErrorsAndCancels() throws InterruptedException {
    // Two connections: with the README's former handlers (roll back, no close) the third
    // failure below waited for a connection and failed with an acquire timeout.
    ConnectionPool pool = servers.newPool(2);
    try {
      Writing writing = new Writing(pool);
      long outboxBefore = outboxRows();
      List<Order> failedOrCancelled = new java.util.ArrayList<>();

      writing.afterInsert = order -> Mono.error(new IllegalStateException("payment declined"));
      for (int i = 0; i < 4; i++) {
        Order order = newOrder();
        failedOrCancelled.add(order);
        StepVerifier.create(writing.placeOrderManually(order, placedEvent(order)))
            .expectErrorMessage("payment declined")
            .verify(Duration.ofSeconds(30));
      }

      for (int i = 0; i < 4; i++) {
        CountDownLatch inserted = new CountDownLatch(1);
        writing.afterInsert = order -> Mono.<Void>never().doOnSubscribe(s -> inserted.countDown());
        Order order = newOrder();
        failedOrCancelled.add(order);
        Disposable running = writing.placeOrderManually(order, placedEvent(order)).subscribe();
        assertThat(inserted.await(30, TimeUnit.SECONDS)).as("the order was inserted").isTrue();
        running.dispose();
        // Each cancel must give its connection back before the next transaction needs it.
      }

      // Both connections are free: two at once, within the pool's 10 s acquire timeout.
      List<Connection> both = Flux.merge(Mono.from(pool.create()), Mono.from(pool.create()))
          .collectList().block(Duration.ofSeconds(30));
      assertThat(both).hasSize(2);
      Flux.fromIterable(both).concatMap(Connection::close).then().block(Duration.ofSeconds(30));

      // And the pattern still commits afterwards.
      writing.afterInsert = order -> Mono.empty();
      Order order = newOrder();
      StepVerifier.create(writing.placeOrderManually(order, placedEvent(order)))
          .verifyComplete();
      assertThat(ordersWithId(order)).isEqualTo(1);
      for (Order rolledBack : failedOrCancelled) {
        assertThat(ordersWithId(rolledBack)).as("order %s rolled back", rolledBack.id()).isZero();
      }
      assertThat(outboxRows()).isEqualTo(outboxBefore + 1);
    } finally {
      pool.dispose();
    }
  }
}
