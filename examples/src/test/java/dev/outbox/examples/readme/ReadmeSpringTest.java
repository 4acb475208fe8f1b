package dev.outbox.examples.readme;

import static org.assertj.core.api.Assertions.assertThat;

import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.r2dbc.OutboxWriter;
import dev.outbox.spring.SpringTransactionConnectionResolver;
import io.r2dbc.pool.ConnectionPool;
import java.util.UUID;
import org.junit.jupiter.api.Test;
import org.springframework.r2dbc.connection.R2dbcTransactionManager;
import org.springframework.r2dbc.core.DatabaseClient;
import org.springframework.transaction.reactive.TransactionalOperator;
import reactor.core.publisher.Mono;
import reactor.test.StepVerifier;

/** README "Spring transactions", run against PostgreSQL. */
class ReadmeSpringTest {
  private final ReadmeServers servers = ReadmeServers.get();

  /** The README code with what it leaves to the reader: the pool and a DatabaseClient. */
  static final class SpringWriting {
    final ConnectionPool pool = ReadmeServers.get().newPool(2);
    final DatabaseClient databaseClient = DatabaseClient.create(pool);

    Message orderPlaced(Order order) {
      return Message.builder().stream("orders").key(order.id()).data(order.toJson()).build();
    }

    // tag::spring[]
    TransactionalOperator tx = TransactionalOperator.create(new R2dbcTransactionManager(pool));
    OutboxWriter writer = OutboxWriter.builder()
        .table(OutboxTable.of("order_outbox"))
        .connectionResolver(SpringTransactionConnectionResolver.create(pool))
        .build();

    Mono<Void> placeOrder(Order order) {
      return databaseClient.sql("INSERT INTO orders (id) VALUES (:id)").bind("id", order.id())
          .then()
          .then(writer.write(orderPlaced(order)))
          .as(tx::transactional);                              // commit or roll back both rows
    }
    // end::spring[]
  }

  @Test
  void theOrderAndItsMessageCommitInSpringsTransaction() {
    SpringWriting spring = new SpringWriting();
    try {
      Order order = new Order(UUID.randomUUID().toString(), "carol");
      long before = servers.count("SELECT count(*) FROM {schema}.order_outbox");
      StepVerifier.create(spring.placeOrder(order)).verifyComplete();
      assertThat(servers.count("SELECT count(*) FROM {schema}.orders WHERE id = '" + order.id() + "'"))
          .isEqualTo(1);
      assertThat(servers.count("SELECT count(*) FROM {schema}.order_outbox")).isEqualTo(before + 1);

      // The same order again: the insert fails, so neither row is added.
      StepVerifier.create(spring.placeOrder(order)).expectError().verify();
      assertThat(servers.count("SELECT count(*) FROM {schema}.order_outbox")).isEqualTo(before + 1);
    } finally {
      spring.pool.dispose();
    }
  }
}
