package dev.outbox.spring.boot;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.MissingConnectionException;
import dev.outbox.r2dbc.OutboxWriter;
import dev.outbox.testing.TestPostgres;
import java.time.Duration;
import org.junit.jupiter.api.Test;
import org.springframework.boot.test.context.runner.ApplicationContextRunner;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.r2dbc.core.DatabaseClient;
import org.springframework.transaction.annotation.Transactional;
import org.springframework.transaction.reactive.TransactionalOperator;
import reactor.core.publisher.Mono;

/**
 * The auto-configured writer joins Spring-managed transactions on real PostgreSQL: both rows
 * (business and outbox) commit together, and a failure rolls both back, with {@code
 * TransactionalOperator} and with {@code @Transactional}.
 */
class SpringTransactionsPostgresTest {
  private final String table = TestPostgres.uniqueName("starter_tx_outbox");
  private final String orders = TestPostgres.uniqueName("starter_tx_orders");
  private final ApplicationContextRunner runner = StarterTests.runner(table)
      .withPropertyValues("outbox.relay.enabled=false") // rows stay in the table to be counted
      .withUserConfiguration(Orders.Config.class)
      .withPropertyValues("test.orders-table=" + orders);

  /** A service as a user writes it: the order and its event in one transaction. */
  static class Orders {
    private final DatabaseClient database;
    private final OutboxWriter outbox;
    private final String ordersTable;

    Orders(DatabaseClient database, OutboxWriter outbox, String ordersTable) {
      this.database = database;
      this.outbox = outbox;
      this.ordersTable = ordersTable;
    }

    Mono<Void> place(String id, boolean failAfterWriting) {
      return database.sql("INSERT INTO " + ordersTable + " (id) VALUES (:id)").bind("id", id)
          .then()
          .then(outbox.write(Message.builder().stream("orders").key(id).data(id).build()))
          .then(failAfterWriting ? Mono.error(new IllegalStateException("payment declined"))
              : Mono.empty());
    }

    @Transactional
    public Mono<Void> placeTransactionally(String id, boolean failAfterWriting) {
      return place(id, failAfterWriting);
    }

    @Configuration(proxyBeanMethods = false)
    static class Config {
      @Bean
      DatabaseClient databaseClient(io.r2dbc.spi.ConnectionFactory connectionFactory) {
        return DatabaseClient.create(connectionFactory);
      }

      @Bean
      Orders orders(DatabaseClient database, OutboxWriter outbox,
          org.springframework.core.env.Environment environment) {
        return new Orders(database, outbox, environment.getRequiredProperty("test.orders-table"));
      }
    }
  }

  private long ordersWith(String id) {
    return TestPostgres.get().queryLong("SELECT count(*) FROM " + orders + " WHERE id = '" + id + "'");
  }

  private long outboxRows() {
    return TestPostgres.get().queryLong("SELECT count(*) FROM " + table);
  }

  private void createOrdersTable() {
    TestPostgres.get().execute("CREATE TABLE " + orders + " (id TEXT PRIMARY KEY)");
  }

  @Test
  void transactionalOperatorCommitsBothRowsAndRollsBothBack() {
    createOrdersTable();
    runner.run(context -> {
      Orders service = context.getBean(Orders.class);
      TransactionalOperator tx = context.getBean(TransactionalOperator.class);

      service.place("op-commit", false).as(tx::transactional).block(Duration.ofSeconds(10));
      assertThat(ordersWith("op-commit")).isEqualTo(1);
      assertThat(outboxRows()).isEqualTo(1);

      assertThatThrownBy(() -> service.place("op-rollback", true).as(tx::transactional)
          .block(Duration.ofSeconds(10))).hasMessageContaining("payment declined");
      assertThat(ordersWith("op-rollback")).isZero();
      assertThat(outboxRows()).isEqualTo(1);
    });
  }

  @Test
  void transactionalAnnotationCommitsBothRowsAndRollsBothBack() {
    createOrdersTable();
    runner.run(context -> {
      Orders service = context.getBean(Orders.class);
      assertThat(org.springframework.aop.support.AopUtils.isAopProxy(service))
          .as("@Transactional proxies the service").isTrue();

      service.placeTransactionally("at-commit", false).block(Duration.ofSeconds(10));
      assertThat(ordersWith("at-commit")).isEqualTo(1);
      assertThat(outboxRows()).isEqualTo(1);

      assertThatThrownBy(() -> service.placeTransactionally("at-rollback", true)
          .block(Duration.ofSeconds(10))).hasMessageContaining("payment declined");
      assertThat(ordersWith("at-rollback")).isZero();
      assertThat(outboxRows()).isEqualTo(1);
    });
  }

  @Test
  void outsideASpringTransactionTheWriterRefusesToWrite() {
    createOrdersTable();
    runner.run(context -> {
      assertThatThrownBy(() -> context.getBean(Orders.class).place("no-tx", false)
          .block(Duration.ofSeconds(10))).isInstanceOf(MissingConnectionException.class);
      assertThat(outboxRows()).isZero();
    });
  }
}
