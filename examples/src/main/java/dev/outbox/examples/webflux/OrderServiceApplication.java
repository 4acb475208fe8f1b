package dev.outbox.examples.webflux;

import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.r2dbc.OutboxWriter;
import dev.outbox.spring.SpringTransactionConnectionResolver;
import io.r2dbc.spi.ConnectionFactory;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.context.annotation.Bean;
import org.springframework.r2dbc.core.DatabaseClient;

/**
 * A WebFlux order service: {@code POST /orders} inserts an order and writes its {@code
 * OrderPlaced} message in the same R2DBC transaction; the relay runs embedded in the service
 * ({@link OutboxRelayLifecycle}).
 *
 * <p>Configuration: {@code spring.r2dbc.url} (the database), {@code outbox.kafka.bootstrap-servers},
 * {@code outbox.table} (default {@code order_outbox}), {@code outbox.topic} (default {@code
 * orders}).
 */
@SpringBootApplication
public class OrderServiceApplication {

  public static void main(String[] args) {
    SpringApplication.run(OrderServiceApplication.class, args);
  }

  @Bean
  OutboxTable outboxTable(@Value("${outbox.table:order_outbox}") String name) {
    return OutboxTable.of(name);
  }

  /**
   * The writer finds the connection of a Spring-managed transaction (TransactionalOperator or
   * {@code @Transactional}) through the resolver, and a connection bound with {@code
   * OutboxContext.withConnection} directly.
   */
  @Bean
  OutboxWriter outboxWriter(ConnectionFactory connectionFactory, OutboxTable table) {
    return OutboxWriter.builder()
        .table(table)
        .connectionResolver(SpringTransactionConnectionResolver.create(connectionFactory))
        .build();
  }

  @Bean
  DatabaseClient databaseClient(ConnectionFactory connectionFactory) {
    return DatabaseClient.create(connectionFactory);
  }
}
